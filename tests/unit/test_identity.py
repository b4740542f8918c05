"""Identity rules without a server: display form, skeleton keys, the reserved prefix, ids and
text-format lines that cannot hold a line break (SPEC "Hardening": "Identities")."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.identity import display_form, is_reserved, skeletons
from gateway.presence import MemoryPresence
from gateway.protocol import LINE_BREAKS, is_valid_user, render_text

BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def same_id(a: str, b: str) -> bool:
    return bool(set(skeletons(display_form(a))) & set(skeletons(display_form(b))))


@pytest.mark.parametrize(
    "variant",
    [
        "Alice",
        "ALICE",
        "alice ",
        " alice",
        "al\u0456ce",
        "alice\u00a0",
        "\uff41\uff4c\uff49\uff43\uff45",
        "\u0430lice",
        "AL\u0406CE",
        "a\u200blice",
    ],
)
def test_look_alikes_are_one_id(variant: str) -> None:
    assert same_id("alice", variant)


@pytest.mark.parametrize(("a", "b"), [("paypal", "paypaI"), ("bob1", "bobl"), ("rob0", "robO")])
def test_tr39_classes_are_one_id(a: str, b: str) -> None:
    assert same_id(a, b)


@pytest.mark.parametrize(("a", "b"), [("alice", "alicia"), ("bob", "böb"), ("zoe", "zoë")])
def test_different_names_stay_different(a: str, b: str) -> None:
    assert not same_id(a, b)


def test_display_form_is_nfc_and_stripped() -> None:
    assert display_form("  zoe\u0301\u00a0") == "zo\u00e9"
    assert display_form("Alice") == "Alice"


@pytest.mark.parametrize(
    "user", ["anonymous-1", "Anonymous-1", "ANONYMOUS-2", "anonymous\u20101", "an\u043enymous-3"]
)
def test_reserved_prefix_matches_on_the_skeleton(user: str) -> None:
    assert is_reserved(user)


@pytest.mark.parametrize("user", ["anonymous", "anon-1", "not-anonymous-1"])
def test_other_ids_are_not_reserved(user: str) -> None:
    assert not is_reserved(user)


@pytest.mark.parametrize("char", BREAKS)
def test_ids_never_hold_a_line_break(char: str) -> None:
    assert not is_valid_user(f"bob{char}alice")


@given(st.text(), st.text(min_size=1), st.sampled_from(["message", "direct", "presence"]))
def test_text_rendering_is_one_line(text: str, user: str, kind: str) -> None:
    fields = {"type": kind, "from": user, "user": user, "text": text, "event": "joined"}
    event: dict[str, Any] = {**fields, "online": 1}
    rendered = render_text(event)
    assert rendered is not None
    assert LINE_BREAKS.search(rendered) is None
    assert len(rendered.splitlines()) <= 1


async def test_memory_claims_are_exclusive_until_released() -> None:
    presence = MemoryPresence()
    assert await presence.claim(["alice"], "c1")
    assert not await presence.claim(["bob", "alice"], "c2")
    assert await presence.claim(["bob"], "c2")  # the refused claim took nothing
    await presence.release(["alice"], "c2")  # not its holder
    assert not await presence.claim(["alice"], "c3")
    await presence.release(["alice"], "c1")
    assert await presence.claim(["alice"], "c3")


def test_an_id_of_private_use_characters_has_no_key() -> None:
    assert skeletons("\ue000\ue001") == ()
    assert skeletons("\ue000alice") == skeletons("alice")
