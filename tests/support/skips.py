"""What a test does when something it needs is missing: skip, saying what to install; under
``CI=true`` (or 1, yes) fail instead, since CI must run every test."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str, in_ci: str = "") -> NoReturn:
    """Skip with ``reason``; in CI fail with it (and ``in_ci``, what CI needs, if given)."""
    if IN_CI:
        pytest.fail(f"{reason} ({in_ci})" if in_ci else reason)
    pytest.skip(reason)
