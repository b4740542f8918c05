"""requirements.lock, the image's hashed dependency lock, agrees with pyproject.toml.

Offline and fast: ``scripts/lock.py``'s own check (the one ``python scripts/lock.py --check``
runs) against the real files, and against altered copies to show that each kind of disagreement
is caught: a dependency added, removed, re-bounded or given an extra without regenerating the
lock, and a lock edited by hand."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.ops.support import ROOT, lock_tool

PYPROJECT = (ROOT / "pyproject.toml").read_text()
LOCK = (ROOT / "requirements.lock").read_text()


lock = lock_tool()


def problems(pyproject: str = PYPROJECT, lock_text: str = LOCK) -> list[str]:
    return list(lock.check(pyproject, lock_text))


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the text exactly once"
    return text.replace(old, new)


def test_the_lock_agrees_with_pyproject() -> None:
    assert problems() == []


def test_the_check_runs_as_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/lock.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "agrees" in result.stdout


def test_every_runtime_dependency_is_pinned_with_hashes() -> None:
    _, pins = lock.parse_lock(LOCK, "gateway")
    names = {pin.name for pin in pins}
    for requirement in lock.dependencies(PYPROJECT)[1]:
        assert lock.canonicalize_name(requirement.name) in names
    # The extras' packages are there too (uvicorn[standard], redis[hiredis]).
    assert {"uvloop", "httptools", "hiredis"} <= names
    for pin in pins:
        assert re.fullmatch(r"[0-9][0-9a-z.+!]*", pin.version), pin.line
        assert pin.hashes, pin.name
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), pin.name
    # Runtime dependencies only: nothing of the test or load extras.
    assert not names & {"pytest", "mypy", "ruff", "locust", "playwright", "uv"}


def test_a_dependency_added_to_pyproject_is_caught() -> None:
    changed = replace_once(PYPROJECT, '"pyjwt>=2.10",', '"pyjwt>=2.10",\n    "rich>=13",')
    found = problems(pyproject=changed)
    assert any("rich>=13 (pyproject.toml) has no pin" in p for p in found), found
    assert any("dependencies changed since the lock was generated" in p for p in found), found


def test_a_dependency_removed_from_pyproject_is_caught() -> None:
    changed = replace_once(PYPROJECT, '    "fastapi-offline>=1.7",\n', "")
    found = problems(pyproject=changed)
    assert any(
        p.startswith("fastapi-offline is in the lock as a dependency of pyproject.toml")
        for p in found
    ), found
    assert any(
        p == "fastapi-offline is in the lock but nothing in pyproject.toml leads to it"
        for p in found
    ), found


def test_a_raised_bound_the_pin_does_not_meet_is_caught() -> None:
    changed = replace_once(PYPROJECT, '"fastapi>=0.115"', '"fastapi>=999"')
    found = problems(pyproject=changed)
    assert any("fastapi>=999 (pyproject.toml) is not satisfied by the lock's" in p for p in found)


def test_a_new_extra_is_caught_by_the_digest() -> None:
    """Which packages an extra brings is the resolver's knowledge, not the lock's: the recorded
    digest of the dependency list is what notices it offline."""
    changed = replace_once(PYPROJECT, '"pyjwt>=2.10"', '"pyjwt[crypto]>=2.10"')
    found = problems(pyproject=changed)
    assert found == [problem for problem in found if "dependencies changed" in problem]
    assert len(found) == 1


def test_comments_and_spacing_in_pyproject_change_nothing() -> None:
    changed = replace_once(PYPROJECT, '"gunicorn>=23",', '"gunicorn >= 23",  # the master')
    assert problems(pyproject=changed) == []


def test_a_hand_edited_lock_is_caught() -> None:
    orphan = "six==1.16.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via nothing-here\n"
    found = problems(lock_text=LOCK + orphan)
    assert "six is in the lock via nothing-here, which the lock lacks" in found
    assert "six is in the lock but nothing in pyproject.toml leads to it" in found

    unhashed = re.sub(r"(?m)^(gunicorn==[^ ]+) \\\n(    --hash=.*\n)+", r"\1\n", LOCK)
    assert unhashed != LOCK
    found = problems(lock_text=unhashed)
    assert any(p.startswith("gunicorn==") and "no sha256 hash" in p for p in found), found

    twice = (
        LOCK + "gunicorn==23.0.0 \\\n    --hash=sha256:" + "1" * 64 + "\n    # via uvicorn-worker\n"
    )
    assert any("gunicorn is pinned twice" in p for p in problems(lock_text=twice))

    loose = replace_once(LOCK, "\nlimits==", "\nlimits>=")
    assert any("is not pinned with a single '=='" in p for p in problems(lock_text=loose))


def test_a_lock_without_the_digest_line_is_caught() -> None:
    stripped = "\n".join(
        line for line in LOCK.splitlines() if not line.startswith(lock.DIGEST_PREFIX)
    )
    assert any(
        "no '# pyproject-dependencies-sha256:' line" in p for p in problems(lock_text=stripped)
    )


@pytest.mark.parametrize(
    "environment", lock.TARGETS, ids=lambda e: f"{e['python_full_version']}-{e['platform_machine']}"
)
def test_markers_leave_one_pin_per_package_in_each_target(environment: dict[str, str]) -> None:
    _, pins = lock.parse_lock(LOCK, "gateway")
    applicable = [pin.name for pin in pins if pin.applies(environment)]
    assert len(applicable) == len(set(applicable))
    # redis needs async-timeout below 3.11.3 only: Debian bookworm's 3.11.2 gets it.
    assert ("async-timeout" in applicable) == (environment["python_full_version"] == "3.11.2")
