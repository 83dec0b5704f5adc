"""CHANGELOG.md follows Keep a Changelog, and the package's version follows the changelog: what
``pip show perso_sync`` says is the newest release the changelog describes."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from perso_sync import __version__

CHANGELOG = Path(__file__).resolve().parents[2] / "CHANGELOG.md"
RELEASE = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$")
SECTION = re.compile(r"^### (?P<kind>.+)$")
KINDS = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def _releases() -> list[tuple[str, str | None]]:
    return [
        (match["version"], match["date"])
        for line in CHANGELOG.read_text(encoding="utf-8").splitlines()
        if (match := RELEASE.match(line))
    ]


def test_the_version_is_the_newest_release_of_the_changelog() -> None:
    releases = [version for version, _ in _releases() if version != "Unreleased"]
    assert releases, "CHANGELOG.md names no release"
    assert releases[0] == __version__, (
        f"perso_sync/_version.py says {__version__}, CHANGELOG.md's newest release is "
        f"{releases[0]}: add its section or bump the version"
    )


def test_the_changelog_keeps_the_keep_a_changelog_shape() -> None:
    releases = _releases()
    assert releases[0] == ("Unreleased", None), "the first section is [Unreleased]"
    dated = releases[1:]
    for version, day in dated:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{version} is not MAJOR.MINOR.PATCH"
        assert day is not None, f"release {version} has no date"
        date.fromisoformat(day)
    days = [day for _, day in dated]
    assert days == sorted(days, reverse=True), "releases go newest first"
    kinds = {
        match["kind"]
        for line in CHANGELOG.read_text(encoding="utf-8").splitlines()
        if (match := SECTION.match(line))
    }
    assert kinds <= KINDS, f"unknown change kinds: {kinds - KINDS}"
