"""The docs hold together: every ``GATEWAY_*`` setting is in docs/configuration.md's table and
every ``GATEWAY_*`` name the docs mention is a setting; every relative link in README.md and
docs/*.md reaches a file of the repository (and a heading, when it names one); the README and
the pages under docs/ link each other both ways. Reads files only: fast, no network."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import AliasChoices

from gateway.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
CONFIGURATION = DOCS / "configuration.md"
PAGES = sorted(DOCS.glob("*.md"))
DOC_FILES = [README, *PAGES]

NOT_SETTINGS = {
    # Read by the test helpers (tests/support/servers.py, tests/browser/helpers.py) to scale
    # every wait on a slow machine; the gateway itself never reads it.
    "GATEWAY_TEST_TIMEOUT_FACTOR",
    # Read by the image test's helper (tests/ops/dockerengine.py): where the debootstrapped
    # base image is cached, and which Debian mirror debootstrap uses.
    "GATEWAY_IMAGE_CACHE",
    "GATEWAY_DEBOOTSTRAP_MIRROR",
    # Read by the example bot in docs/client.md (not by the gateway): the server to connect to
    # and its token; tests/client/test_docs_bot.py sets GATEWAY_URL when it runs the bot.
    "GATEWAY_URL",
    "GATEWAY_TOKEN",
}
"""``GATEWAY_*`` names the docs may mention although they are not settings, each with why."""

NAME = re.compile(r"\bGATEWAY_[A-Z0-9][A-Z0-9_]*\b")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def setting_names() -> set[str]:
    """The environment names pydantic-settings reads: an alias as written, else prefix + field."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if alias is None:
            names.add((prefix + field_name).upper())
        elif isinstance(alias, str):
            names.add(alias.upper())
        elif isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        else:  # an AliasPath reads inside a value: no variable of its own to document
            raise AssertionError(f"{field_name}: unexpected alias {alias!r}")
    return names


def configuration_table() -> set[str]:
    """The names in the first column of the tables of docs/configuration.md."""
    names: set[str] = set()
    for line in CONFIGURATION.read_text().splitlines():
        if line.startswith("|"):
            first_cell = line.strip("|").split("|", 1)[0]
            names.update(NAME.findall(first_cell))
    return names


def mentioned(path: Path) -> set[str]:
    return set(NAME.findall(path.read_text()))


def test_settings_are_read_from_gateway_variables() -> None:
    """Guards the checks below against reading nothing."""
    names = setting_names()
    assert {"GATEWAY_BROKER_URL", "GATEWAY_PORT", "GATEWAY_HOOK_URL"} <= names
    assert all(name.startswith("GATEWAY_") for name in names), sorted(names)


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = setting_names() - configuration_table()
    assert not missing, f"settings missing from docs/configuration.md's table: {sorted(missing)}"


def test_the_configuration_table_lists_only_settings() -> None:
    unknown = configuration_table() - setting_names()
    assert not unknown, f"docs/configuration.md's table lists non-settings: {sorted(unknown)}"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_documented_variable_is_a_setting(path: Path) -> None:
    unknown = mentioned(path) - setting_names() - NOT_SETTINGS
    assert not unknown, (
        f"{path.relative_to(REPO)} mentions GATEWAY_* names that are not settings: "
        f"{sorted(unknown)} (a renamed setting, or add it to NOT_SETTINGS saying why)"
    )


def test_the_allow_list_is_not_stale() -> None:
    documented = set().union(*(mentioned(path) for path in DOC_FILES))
    assert not NOT_SETTINGS & setting_names(), "a setting in NOT_SETTINGS"
    stale = NOT_SETTINGS - documented
    assert not stale, f"in NOT_SETTINGS but no longer documented: {sorted(stale)}"


def prose(text: str) -> str:
    """The text without code blocks and code spans, where brackets are not links."""
    return INLINE_CODE.sub("code", FENCE.sub("", text))


def links(path: Path) -> Iterator[str]:
    yield from LINK.findall(prose(path.read_text()))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped (``-`` and ``_``
    kept), spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slugs_are_githubs() -> None:
    assert slug("Large rooms: presence that costs O(N)") == "large-rooms-presence-that-costs-on"
    assert slug("Metrics — `GET /metrics`") == "metrics--get-metrics"
    assert slug("Docker Compose (a laptop)") == "docker-compose-a-laptop"
    assert slug("Sentinel failover and the cost of `GATEWAY_BROKER_MIN_REPLICAS` (issue 15)") == (
        "sentinel-failover-and-the-cost-of-gateway_broker_min_replicas-issue-15"
    )


def broken_links(path: Path) -> Iterator[str]:
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_relative_to(REPO):
            yield f"{target}: outside the repository (a fresh clone has no such file)"
        elif not resolved.exists():
            yield f"{target}: no such file"
        elif anchor and resolved.suffix != ".md":
            yield f"{target}: an anchor into a file that has no headings"
        elif anchor and anchor not in anchors(resolved):
            yield f"{target}: {resolved.relative_to(REPO)} has no heading #{anchor}"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_reach_a_file_and_heading(path: Path) -> None:
    broken = list(broken_links(path))
    assert not broken, f"{path.relative_to(REPO)}: " + "; ".join(broken)


def test_the_checks_see_the_links() -> None:
    """Guards the link check against matching nothing."""
    assert "docs/configuration.md" in set(links(README))
    assert "../loadtest/RESULTS.md#hooks-cost-of-a-message-hook" in set(links(DOCS / "backend.md"))


def linked_files(path: Path) -> set[Path]:
    return {(path.parent / target.partition("#")[0]).resolve() for target in links(path)}


def test_the_readme_links_every_page() -> None:
    unlinked = {page.name for page in PAGES} - {p.name for p in linked_files(README)}
    assert not unlinked, f"README.md does not link: {sorted(unlinked)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda path: path.name)
def test_every_page_links_back_to_the_readme(page: Path) -> None:
    assert README in linked_files(page), f"docs/{page.name} has no link back to README.md"
