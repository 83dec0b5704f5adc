"""Every reference the code makes to the project's docs resolves inside the repository.

Modules and tests cite the wire protocol as ``docs/PROTOCOL.md §n``; a maintainer following one
must land on a section that exists, and nothing may point at documents the repository does not
hold (a user who installs the package has only what is here).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("perso_sync", "mock_server", "tests", "bench", "examples", "docs")
_SECTION_CITE = re.compile(r"PROTOCOL\.md §(\d+)")
_SECTION_HEADING = re.compile(r"^## (\d+)\. ", re.M)


def _files() -> list[Path]:
    return [
        path
        for folder in SOURCES
        for path in sorted((REPO / folder).rglob("*"))
        if path.suffix in {".py", ".md"} and path.is_file()
    ]


def test_every_protocol_section_cited_exists() -> None:
    sections = set(_SECTION_HEADING.findall((REPO / "docs" / "PROTOCOL.md").read_text("utf-8")))
    assert sections, "docs/PROTOCOL.md has no numbered sections"
    dangling = sorted(
        f"{path.relative_to(REPO)}: §{number}"
        for path in _files()
        for number in _SECTION_CITE.findall(path.read_text("utf-8"))
        if number not in sections
    )
    assert not dangling, f"citations of sections docs/PROTOCOL.md does not have: {dangling}"


def test_nothing_cites_a_document_outside_the_repository() -> None:
    outside = sorted(
        str(path.relative_to(REPO))
        for path in _files()
        if path != Path(__file__)
        and re.search(r"DESIGN\.md|STYLE\.md|\.\./shared|/work/shared", path.read_text("utf-8"))
    )
    assert not outside, f"these cite documents that are not in the repository: {outside}"
