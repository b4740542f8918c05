"""The per-connection command budget on a clock the test holds."""

from __future__ import annotations

import pytest

from gateway.ratelimit import CommandBudget
from gateway.settings import RateLimit, SettingsError, load_settings


def admitted(budget: CommandBudget, times: list[float]) -> int:
    return sum(budget.allow(now) for now in times)


def test_the_limit_is_admitted_then_refused_within_one_window() -> None:
    budget = CommandBudget(RateLimit(30, 10), now=100.0)
    assert admitted(budget, [100.0 + n * 0.01 for n in range(30)]) == 30
    assert not budget.allow(100.5)


def test_a_steady_client_at_the_rate_is_never_refused() -> None:
    budget = CommandBudget(RateLimit(30, 10), now=0.0)
    times = [n * (10 / 30) + 0.001 for n in range(300)]
    assert admitted(budget, times) == 300


def test_a_burst_is_paid_back_as_the_window_slides() -> None:
    budget = CommandBudget(RateLimit(30, 10), now=0.0)
    assert admitted(budget, [9.9] * 40) == 30
    # Just into the next window the previous one still counts almost fully ...
    assert admitted(budget, [10.1] * 10) == 1
    # ... and half of it once the sliding window covers half of it (15 in this one in all).
    assert admitted(budget, [15.0] * 40) == 14
    # Two windows of silence: the whole budget again.
    assert admitted(budget, [40.0] * 40) == 30


def test_no_window_admits_more_than_the_limit_under_a_flood() -> None:
    budget = CommandBudget(RateLimit(30, 10), now=0.0)
    times = [n * 0.01 for n in range(10_000)]  # 100 per second for 100 s
    admitted_at = [now for now in times if budget.allow(now)]
    for start in range(0, 90):
        inside = [t for t in admitted_at if start <= t < start + 10]
        assert len(inside) <= 30 * 1.1, (start, len(inside))
    assert len(admitted_at) >= 9 * 30


def test_the_setting_defaults_to_30_per_10_s_and_names_itself_when_wrong() -> None:
    assert load_settings().command_rate_limit == RateLimit(30, 10)
    assert not load_settings(command_rate_limit="0").command_rate_limit.enabled
    with pytest.raises(SettingsError, match="GATEWAY_COMMAND_RATE_LIMIT"):
        load_settings(command_rate_limit="lots")
