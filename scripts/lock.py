#!/usr/bin/env python3
"""The image's dependency lock, ``requirements.lock``: every runtime dependency, hashed.

    python scripts/lock.py            # regenerate it from pyproject.toml (needs uv and the index)
    python scripts/lock.py --check    # offline: does the lock still agree with pyproject.toml?

The lock is ``uv pip compile pyproject.toml --universal --generate-hashes`` (one resolution for
every platform and every Python that ``requires-python`` admits, with the hashes of every file of
each pinned release) plus one header line: the SHA-256 of ``[project].dependencies`` in canonical
form, so any change to the dependency list (a new package, an extra, a marker, a bound) is noticed
without the network. ``--check`` also verifies the lock's content against pyproject.toml: every
requirement is satisfied by exactly one applicable pin in each target environment, every pin has
hashes, and every pin is reachable from pyproject.toml through the resolver's ``# via`` annotations
(nothing left over from a removed dependency). tests/ops/test_ops_lock.py runs the same check.

uv is a developer tool, not a dependency: ``pip install uv`` (into the venv) before regenerating.
It uses its own index settings (``UV_INDEX_URL``, ``UV_DEFAULT_INDEX``), never pip's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
REGENERATE = "python scripts/lock.py"
DIGEST_PREFIX = "# pyproject-dependencies-sha256: "
UV_ARGS = ["pip", "compile", "--universal", "--generate-hashes"]

# The environments the lock must serve: the image's (Debian bookworm's CPython 3.11.2, or an
# official python:3.11 image), on both Docker architectures, and the newer Pythons that
# requires-python admits. A pin must be unique and every requirement satisfied in each.
_LINUX = {
    "implementation_name": "cpython",
    "os_name": "posix",
    "platform_python_implementation": "CPython",
    "platform_release": "6.1.0",
    "platform_system": "Linux",
    "platform_version": "#1 SMP",
    "sys_platform": "linux",
}
TARGETS: list[dict[str, str]] = [
    {
        **_LINUX,
        "platform_machine": machine,
        "python_full_version": full,
        "python_version": ".".join(full.split(".")[:2]),
        "implementation_version": full,
    }
    for machine in ("x86_64", "aarch64")
    for full in ("3.11.2", "3.11.11", "3.12.8", "3.13.1")
]


@dataclass
class Pin:
    name: str  # canonical
    version: str
    marker: Marker | None
    hashes: list[str]
    via: list[str] = field(default_factory=list)  # canonical names, or the project's root label
    line: str = ""

    def applies(self, env: dict[str, str]) -> bool:
        return self.marker is None or self.marker.evaluate(env)


def dependencies(pyproject_text: str) -> tuple[str, list[Requirement]]:
    project = tomllib.loads(pyproject_text)["project"]
    return str(project["name"]), [Requirement(r) for r in project.get("dependencies", [])]


def digest(pyproject_text: str) -> str:
    """SHA-256 of the dependency list in canonical form: names normalised, whitespace and
    order ignored (a comment or a reformatted bound does not change it; anything else does)."""
    _, requirements = dependencies(pyproject_text)
    canonical = []
    for req in requirements:
        extras = ",".join(sorted(canonicalize_name(e) for e in req.extras))
        canonical.append(
            "|".join(
                [
                    canonicalize_name(req.name),
                    extras,
                    str(req.specifier),
                    str(req.marker or ""),
                    req.url or "",
                ]
            )
        )
    return hashlib.sha256(json.dumps(sorted(canonical)).encode()).hexdigest()


def root_label(project_name: str) -> str:
    """How uv names pyproject.toml in a ``# via`` annotation."""
    return f"{project_name} (pyproject.toml)"


def parse_lock(text: str, project_name: str) -> tuple[str | None, list[Pin]]:
    """(recorded digest, pins) of a ``uv pip compile --generate-hashes`` output: requirements at
    the start of a line, continued by ``\\``; indented comments annotate the pin above them."""
    recorded: str | None = None
    pins: list[Pin] = []
    root = root_label(project_name)
    lines = text.splitlines()
    i = 0
    via_list = False
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith(DIGEST_PREFIX):
                recorded = line[len(DIGEST_PREFIX) :].strip()
            continue
        if line.lstrip().startswith("#"):
            comment = line.lstrip()[1:].strip()
            if not pins:
                continue
            if comment == "via":
                via_list = True
            elif comment.startswith("via "):
                pins[-1].via.append(_via_name(comment[4:], root))
                via_list = False
            elif via_list:
                pins[-1].via.append(_via_name(comment, root))
            continue
        via_list = False
        logical = line
        while logical.endswith("\\") and i < len(lines):
            logical = logical[:-1] + " " + lines[i].strip()
            i += 1
        words = logical.split(" --hash=")
        requirement = Requirement(words[0].strip())
        specs = list(requirement.specifier)
        version = specs[0].version if len(specs) == 1 and specs[0].operator == "==" else ""
        pins.append(
            Pin(
                name=canonicalize_name(requirement.name),
                version=version,
                marker=requirement.marker,
                hashes=[w.strip() for w in words[1:]],
                line=words[0].strip(),
            )
        )
    return recorded, pins


def _via_name(text: str, root: str) -> str:
    text = text.strip()
    return text if text == root else canonicalize_name(text.split()[0])


def check(pyproject_text: str, lock_text: str) -> list[str]:
    """Every way the lock disagrees with pyproject.toml, as sentences; empty when they agree."""
    problems: list[str] = []
    project_name, requirements = dependencies(pyproject_text)
    root = root_label(project_name)
    recorded, pins = parse_lock(lock_text, project_name)
    if not pins:
        return ["the lock pins nothing"]

    expected = digest(pyproject_text)
    if recorded is None:
        problems.append(f"the lock has no '{DIGEST_PREFIX.strip()}' line: regenerate it")
    elif recorded != expected:
        problems.append(
            "pyproject.toml's dependencies changed since the lock was generated "
            f"(digest {recorded[:12]}… recorded, {expected[:12]}… now)"
        )

    for pin in pins:
        if not pin.version:
            problems.append(f"{pin.line!r} is not pinned with a single '=='")
        if not pin.hashes or not all(h.startswith("sha256:") for h in pin.hashes):
            problems.append(f"{pin.name}=={pin.version} has no sha256 hash")
        if not pin.via:
            problems.append(f"{pin.name}=={pin.version} has no '# via' annotation")

    direct: set[str] = {canonicalize_name(r.name) for r in requirements}
    for env in TARGETS:
        where = f"Python {env['python_full_version']} on {env['platform_machine']}"
        applicable: dict[str, Pin] = {}
        for pin in pins:
            if not pin.applies(env):
                continue
            if pin.name in applicable:
                problems.append(f"{pin.name} is pinned twice for {where}")
            applicable[pin.name] = pin
        for req in requirements:
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            found = applicable.get(name)
            if found is None:
                problems.append(f"{req} (pyproject.toml) has no pin in the lock for {where}")
            elif not req.specifier.contains(found.version, prereleases=True):
                problems.append(
                    f"{req} (pyproject.toml) is not satisfied by the lock's "
                    f"{found.name}=={found.version} for {where}"
                )

    names: set[str] = {pin.name for pin in pins}
    children: dict[str, set[str]] = {root: set()}
    for pin in pins:
        for parent in pin.via:
            if parent == root:
                if pin.name not in direct:
                    problems.append(
                        f"{pin.name} is in the lock as a dependency of pyproject.toml, "
                        "which no longer asks for it"
                    )
                    continue
            elif parent not in names:
                problems.append(f"{pin.name} is in the lock via {parent}, which the lock lacks")
                continue
            children.setdefault(parent, set()).add(pin.name)
    for direct_name in sorted(direct & names):
        if direct_name not in children[root]:
            problems.append(
                f"{direct_name} is a dependency of pyproject.toml the lock does not mark so"
            )
    reachable = _reach(root, children)
    for orphan in sorted(names - reachable):
        problems.append(f"{orphan} is in the lock but nothing in pyproject.toml leads to it")
    return problems


def _reach(start: str, children: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def find_uv() -> str | None:
    local = Path(sys.executable).parent / "uv"
    return str(local) if local.exists() else shutil.which("uv")


def regenerate(uv: str, extra_args: Iterable[str] = ()) -> str:
    """The new lock's text: uv's output with the digest line after its header."""
    env = dict(os.environ, UV_CUSTOM_COMPILE_COMMAND=REGENERATE)
    result = subprocess.run(
        [uv, *UV_ARGS, *extra_args, PYPROJECT.name],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0:
        raise SystemExit(f"uv pip compile failed:\n{result.stderr}")
    lines = result.stdout.splitlines(keepends=True)
    body = next((n for n, line in enumerate(lines) if not line.startswith("#")), len(lines))
    lines.insert(body, f"{DIGEST_PREFIX}{digest(PYPROJECT.read_text())}\n")
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="offline agreement check only")
    args, extra = parser.parse_known_args(argv)
    if args.check:
        problems = check(PYPROJECT.read_text(), LOCK.read_text())
        for problem in problems:
            print(f"requirements.lock: {problem}", file=sys.stderr)
        if problems:
            print(f"regenerate it: {REGENERATE}", file=sys.stderr)
            return 1
        print("requirements.lock agrees with pyproject.toml")
        return 0
    uv = find_uv()
    if uv is None:
        print("uv is not installed: pip install uv", file=sys.stderr)
        return 1
    text = regenerate(uv, extra)
    problems = check(PYPROJECT.read_text(), text)
    if problems:  # uv's output format changed under the parser: fail loudly, write nothing
        print("\n".join(problems), file=sys.stderr)
        return 1
    LOCK.write_text(text)
    pins = len(parse_lock(text, dependencies(PYPROJECT.read_text())[0])[1])
    print(f"requirements.lock: {pins} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
