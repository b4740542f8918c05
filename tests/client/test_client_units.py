"""The client's decisions without sockets: backoff bounds, reconnect plans, resume points,
the order it hands messages over in, rejoins, tokens, event parsing.

The resume cases mirror the chat page's own (``tests/browser/render.test.mjs``), since the page
is the reference behaviour: ``undefined`` there (the server does not say) is ``None`` here, and
``null`` there (an empty room) is ``"0"`` here.
"""

from __future__ import annotations

import base64
import json
import random

import pytest

from gateway.client import (
    Connected,
    Joined,
    Left,
    Message,
    Presence,
    Reconnect,
    Recovered,
    Resumed,
    RoomHistory,
    RoomLog,
    Unknown,
    backoff_delay,
    compare_ids,
    jwt_expiry,
    parse_event,
    plan_reconnect,
    refresh_delay,
)
from gateway.client.backoff import http_refusal_code
from gateway.client.state import SessionState

ALMOST_ONE = 1 - 1e-12
BASE = 1796235600000000


def at(n: int) -> str:
    return str(BASE + n)


def message(n: int, room: str = "lobby") -> Message:
    return Message(at(n), room, "a", f"t{n}")


# Backoff and the reconnect plan


@pytest.mark.parametrize("attempt", [*range(12), 30, 31, 1000])
def test_backoff_is_full_jitter_under_the_exponential_ceiling(attempt: int) -> None:
    ceiling = min(30.0, 0.5 * 2 ** min(attempt, 30))
    assert backoff_delay(attempt, random=lambda: 0.0) == 0.0
    assert ceiling * 0.999 < backoff_delay(attempt, random=lambda: ALMOST_ONE) < ceiling
    rng = random.Random(attempt)
    samples = [backoff_delay(attempt, random=rng.random) for _ in range(2000)]
    assert all(0 <= s < ceiling for s in samples)
    assert max(samples) > ceiling * 0.9
    assert min(samples) < ceiling * 0.1


def test_backoff_honours_base_and_cap_and_a_negative_attempt() -> None:
    assert backoff_delay(10, base=0.05, cap=1.0, random=lambda: ALMOST_ONE) < 1.0
    assert backoff_delay(2, base=0.05, cap=1.0, random=lambda: 0.5) == pytest.approx(0.1)
    assert backoff_delay(-3, random=lambda: 0.5) == pytest.approx(0.25)


def half() -> float:
    return 0.5


def test_the_plan_stays_offline_after_policy_and_idle_closes() -> None:
    policy = plan_reconnect(1008, "bad token", random=half)
    assert (policy.retry, policy.reason) == (False, "refused by the server's policy: bad token")
    assert plan_reconnect(4408, random=half).reason == "disconnected after being idle"
    assert plan_reconnect(1008, "token expired", was_connected=True).retry is False
    assert plan_reconnect(1000, by_user=True).reason == "closed by the client"


def test_reconnect_on_overrides_staying_offline() -> None:
    assert plan_reconnect(4408, reconnect_on={4408}, attempt=2, random=half).delay == 1.0
    assert plan_reconnect(1008, reconnect_on={4408}).retry is False


def test_a_stale_duplicate_after_an_own_drop_is_retried_from_a_longer_window() -> None:
    reason = "client id already connected"
    plan = plan_reconnect(1008, reason, was_connected=True, random=half)
    assert (plan.retry, plan.delay) == (True, 2.0)  # as the page: backoffDelay(3) at 0.5
    assert plan_reconnect(1008, reason, was_connected=False).retry is False  # someone else


def test_the_drain_hint_comes_first_then_the_first_window_of_jitter() -> None:
    plan = plan_reconnect(1012, hint_ms=1500, attempt=7, random=lambda: ALMOST_ONE)
    assert plan.retry
    assert 1.5 <= plan.delay < 2.0
    assert plan_reconnect(1012, hint_ms=0, random=lambda: 0.0).delay == 0.0


def test_try_again_later_and_drops() -> None:
    assert plan_reconnect(1013, attempt=0, random=half).delay == 2.0
    assert plan_reconnect(1013, attempt=5, random=half).delay == 8.0
    assert plan_reconnect(1006, attempt=0, random=half).delay == 0.25
    assert plan_reconnect(1011, attempt=2, random=half).delay == 1.0


def test_an_expired_token_is_retried_only_with_a_refresh_callback() -> None:
    assert plan_reconnect(1008, "token expired", can_refresh=True, random=half).retry
    assert not plan_reconnect(1008, "repeated abuse", can_refresh=True).retry


@pytest.mark.parametrize(
    ("status", "code"), [(403, 1008), (404, 1008), (401, 1008), (429, 1013), (503, 1013)]
)
def test_a_refused_handshake_counts_as_its_close_code(status: int, code: int) -> None:
    assert http_refusal_code(status) == code


# Resume points: the page's RoomHistory


def test_ids_order_by_value_then_by_length_and_text() -> None:
    assert compare_ids("9", "10") == -1
    assert compare_ids("10", "10") == 0
    assert compare_ids("0010", "9") == 1
    assert compare_ids("b", "ab") == -1
    assert compare_ids("ab", "ac") == -1


def test_dedupes_by_id_and_resumes_after_the_newest_held() -> None:
    room = RoomHistory()
    assert room.resume_after(None) == "0"  # first join: the history the server keeps
    assert room.accept("5")
    assert room.accept("6")
    assert not room.accept("5")
    assert room.accept("4")  # an older one replayed late is still new
    assert room.last_id == "6"
    room.resumed()
    assert room.resume_after(None) == "6"  # the server does not say: ask
    assert room.resume_after("9") == "6"  # missed 7..9
    room.resumed()
    assert room.resume_after("6") is None  # missed nothing
    assert room.accept("10")
    assert not room.accept("10")
    assert room.epoch == 0


def test_asks_for_nothing_in_an_empty_room_everything_once_it_has_messages() -> None:
    room = RoomHistory()
    assert room.resume_after("0") is None
    assert room.resume_after("3") == "0"


def test_an_empty_room_after_messages_is_a_restart() -> None:
    room = RoomHistory()
    assert room.resume_after("0") is None
    room.accept(at(1))
    assert room.resume_after("0") is None  # the server forgot the room: nothing to fetch
    assert (room.epoch, room.last_id) == (1, None)


def test_on_reconnect_resumes_only_when_last_id_is_newer() -> None:
    room = RoomHistory()
    for n in range(1, 6):
        assert room.accept(at(n))
    assert room.resume_after(at(9)) == at(5)  # 6..9 went by while away
    shown = [n for n in [10, 11, 6, 7, 8, 9, 9, 11] if room.accept(at(n))]
    assert shown == [10, 11, 6, 7, 8, 9]
    room.resumed()
    assert room.resume_after(at(11)) is None
    assert room.resume_after(at(12)) == at(11)


def test_an_outstanding_resume_does_not_move_the_resume_point() -> None:
    room = RoomHistory()
    for n in range(1, 6):
        room.accept(at(n))
    assert room.resume_after(at(9)) == at(5)
    assert room.accept(at(10))  # live, beyond the gap
    assert room.accept(at(6))  # the replay has begun
    assert room.resume_after(at(12)) == at(5)  # dropped before the ack: from before the gap
    for n in [11, 12, 6, 7, 8, 9, 10, 11, 12]:
        room.accept(at(n))
    room.resumed()
    assert room.resume_after(at(12)) is None
    assert room.resume_after(at(13)) == at(12)


def test_a_new_epoch_when_the_server_forgot_its_history() -> None:
    room = RoomHistory()
    for n in ["1", "2", "3"]:
        room.accept(n)
    assert room.resume_after("1") == "0"  # the server is at 1 again: take all it has
    assert room.epoch == 1
    assert room.accept("1")  # id 1 of the new epoch is new
    room.accept("2")
    assert room.resume_after("0") is None  # restarted and empty
    assert (room.epoch, room.last_id) == (2, None)


def test_memory_stays_bounded_outside_a_resume() -> None:
    room = RoomHistory()
    room.resume_after("0")
    for n in range(1, 10_001):
        assert room.accept(at(n))
    assert room.seen == set()
    assert not room.accept(at(5000))  # below the resume point: held by definition


# The order messages are handed over in


def test_messages_during_a_resume_are_held_and_released_in_order_after_a_gap_marker() -> None:
    log = RoomLog("lobby")
    out, after = log.on_joined(at(0))
    assert (out, after) == ([], "0")
    handed = [m for n in [5, 6, 2, 3, 4, 5] for m in log.on_message(message(n))]
    assert handed == []
    released = log.on_resumed(Resumed("lobby", recovered=False, count=3))
    assert released[0] == Recovered("lobby", "0")
    assert [m.id for m in released[1:-1] if isinstance(m, Message)] == [at(n) for n in range(2, 7)]
    assert isinstance(released[-1], Resumed)
    assert log.on_message(message(7)) == [message(7)]
    assert log.on_message(message(6)) == []


def test_a_held_message_survives_a_drop_before_the_resumed_ack() -> None:
    log = RoomLog("lobby")
    log.on_joined("0")
    log.on_message(message(1))
    assert log.on_joined(at(1)) == ([], None)  # holds the newest: nothing to ask
    assert log.on_joined(at(4)) == ([], at(1))
    assert log.on_message(message(5)) == []
    assert log.on_joined(at(6)) == ([], at(1))  # dropped again: from before the gap
    for n in [2, 3, 4, 5, 6]:
        log.on_message(message(n))
    released = log.on_resumed(Resumed("lobby", recovered=True, count=5))
    assert [m.id for m in released if isinstance(m, Message)] == [at(n) for n in range(2, 7)]


def test_a_restart_releases_what_was_held_and_says_so() -> None:
    log = RoomLog("lobby")
    log.on_joined("0")
    log.on_message(message(8))
    log.on_joined(at(10))  # a resume outstanding from 8
    log.on_message(message(11))
    out, after = log.on_joined("2")  # the numbering started over
    assert [type(e) for e in out] == [Message, Recovered]
    assert after == "0"
    assert out[1] == Recovered("lobby", at(11), reason="the server's numbering started over")


def test_without_backfill_a_first_join_starts_at_last_id() -> None:
    log = RoomLog("news")
    assert log.on_joined(at(40), backfill=False) == ([], None)
    assert log.on_message(message(40, "news")) == []
    assert log.on_message(message(41, "news")) == [message(41, "news")]
    assert log.on_joined(at(45), backfill=False) == ([], at(41))  # a reconnect still resumes


# The session: establishing, rejoining, leaving


def joined(room: str, last_id: str) -> Joined:
    return Joined(room, ("me",), 1, last_id)


def test_the_lobby_ack_establishes_and_rejoins_the_other_rooms() -> None:
    state = SessionState("me", rooms=["a", "b"])
    state.opened()
    step = state.on_event(joined("lobby", at(3)))
    assert step.send == [
        {"type": "resume", "room": "lobby", "after": "0"},
        {"type": "join", "room": "a"},
        {"type": "join", "room": "b"},
    ]
    assert step.emit == [Connected("me", reconnected=False), joined("lobby", at(3))]
    assert state.on_event(joined("a", "0")).send == []  # an empty room: nothing to ask
    state.on_event(Resumed("lobby", True, 3))
    state.closed()
    state.opened()
    again = state.on_event(joined("lobby", "0"))
    assert again.emit[0] == Connected("me", reconnected=True)


def test_leaving_drops_the_room_and_ignores_its_stragglers() -> None:
    state = SessionState("me", rooms=["a"])
    state.opened()
    state.on_event(joined("lobby", "0"))
    assert state.leave("a") == [{"type": "leave", "room": "a"}]
    assert state.on_event(message(1, "a")).emit == []
    assert state.join("a") == [{"type": "join", "room": "a"}]
    assert state.on_event(Left("a")).emit == [Left("a")]  # the ack of the leave...
    assert "a" in state.rooms  # ...does not undo the join that followed it
    assert state.on_event(Left("a")).emit == [Left("a")]  # removed by the server this time
    assert "a" not in state.rooms


def test_joins_while_offline_wait_for_the_next_connection() -> None:
    state = SessionState("me")
    assert state.join("later") == []
    state.opened()
    assert {"type": "join", "room": "later"} in state.on_event(joined("lobby", "0")).send


def test_the_reconnect_hint_is_kept_for_the_close() -> None:
    state = SessionState("me")
    state.opened()
    state.on_event(Reconnect(750))
    assert state.hint_ms == 750


# Tokens and events


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def test_the_expiry_is_read_without_verifying() -> None:
    assert jwt_expiry(jwt({"sub": "a", "exp": 1_900_000_000})) == 1_900_000_000
    assert jwt_expiry(jwt({"sub": "a"})) is None
    assert jwt_expiry(jwt({"exp": "soon"})) is None
    assert jwt_expiry("not-a-jwt") is None
    assert jwt_expiry("a.!!!.c") is None


def test_a_refresh_is_due_a_lead_before_exp_or_half_way_for_short_tokens() -> None:
    token = jwt({"exp": 10_000})
    assert refresh_delay(token, now=6_000, lead=60) == 3_940
    assert refresh_delay(token, now=9_996, lead=60) == 2  # half of the 4 s left
    assert refresh_delay(token, now=10_100) == 0.5  # already expired: at once, never a spin
    assert refresh_delay(jwt({"sub": "a"}), now=0) is None


def test_events_parse_to_their_classes_and_keep_unknown_types() -> None:
    batch = {"event": "diff", "joined": ["a"], "left": ["b"], "online": 4}
    diff = parse_event({"type": "presence", "room": "r", **batch})
    assert diff == Presence("r", "diff", 4, None, ("a",), ("b",))
    assert parse_event({"type": "presence", "room": "r", "event": "count", "online": 5000}) == (
        Presence("r", "count", 5000)
    )
    ack = parse_event({"type": "joined", "room": "r", "online": ["a"], "count": 9, "last_id": "7"})
    assert ack == Joined("r", ("a",), 9, "7")
    assert parse_event({"type": "resumed", "room": "r", "count": 2}) == Resumed("r", True, 2)
    assert parse_event({"type": "reconnect", "after_ms": -5}) == Reconnect(0)
    assert parse_event({"type": "typing", "user": "a"}) == Unknown("typing")
    sent = parse_event({"type": "message", "id": "3", "room": "r", "from": "x", "text": "hi"})
    assert isinstance(sent, Message)
    assert sent.sender == "x"
