"""What a ``client_id`` is: the form shown to others, and the keys that make two ids one.

An id is shown as given, in NFC with no leading or trailing whitespace. For uniqueness (and
the reserved ``anonymous-`` prefix) ids are compared on their confusable skeleton (Unicode
TR39), computed by `disarm`: NFKC, the confusables table, case folding, with invisible and
bidirectional controls removed and whitespace runs collapsed. Its digit policy ``tr39`` keeps
TR39's own classes (``1`` with ``l``, ``0`` with ``O``).

A TR39 skeleton is case-sensitive (``I`` folds to ``l``, ``i`` stays ``i``), so ``ALICE`` and
``alice`` would differ on it alone, while folding case first loses ``paypaI`` against
``paypal``. Each id therefore has two keys, the skeleton of the id and of its case fold; two
ids are the same when they share either. A claim takes both.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from disarm import skeleton_key

RESERVED_PREFIX: Final = "anonymous-"
"""Ids the hub hands to anonymous connections; nobody may claim one through the URL."""


def _skeleton(text: str) -> str:
    return skeleton_key(text, digit_policy="tr39")


_RESERVED_SKELETON: Final = _skeleton(RESERVED_PREFIX)


def display_form(raw: str) -> str:
    """The id as others see it: NFC, stripped of surrounding whitespace."""
    return unicodedata.normalize("NFC", raw).strip()


def skeletons(user: str) -> tuple[str, ...]:
    """The keys two ids must not share (one or two, never empty strings for a valid id)."""
    compatible = unicodedata.normalize("NFKC", user)
    keys = (_skeleton(compatible), _skeleton(compatible.casefold()))
    return tuple(dict.fromkeys(key for key in keys if key))


def is_reserved(user: str) -> bool:
    """Whether ``user`` looks like an id the hub hands out: ``Anonymous-1`` does, and so does
    one with U+2010 HYPHEN for the ``-``."""
    return any(key.startswith(_RESERVED_SKELETON) for key in skeletons(user))
