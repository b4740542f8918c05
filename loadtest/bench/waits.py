"""Polling helpers for the runs: bounded in time, no fixed sleeps as synchronisation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_stable(read: Callable[[], int], quiet: float, deadline: float) -> int:
    """Wait until ``read()`` stops changing for ``quiet`` seconds (or ``deadline`` passes)."""
    end = time.monotonic() + deadline
    last = read()
    since = time.monotonic()
    while time.monotonic() < end:
        await asyncio.sleep(min(0.05, quiet / 4))
        now = read()
        if now != last:
            last = now
            since = time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


async def wait_until(pred: Callable[[], bool], deadline: float) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()
