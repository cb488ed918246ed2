"""The README and docs/ hold together: every relative link reaches a file, and an anchor a
heading of it (as GitHub names headings); every page of docs/ and every screenshot is linked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text outside code blocks and code spans, where a link is a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _FENCE.sub("", page.read_text()), re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(page: Path) -> list[str]:
    return [t for t in _LINK.findall(prose(page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_slugs_follow_githubs_rules() -> None:
    assert slug("eta, expires, revoke, results that expire") == (
        "eta-expires-revoke-results-that-expire"
    )
    assert slug("Wire format: `schemas/`") == "wire-format-schemas"
    assert slug("A record's path, from `delay()` to the store") == (
        "a-records-path-from-delay-to-the-store"
    )
    assert slug("A chord of 10,000 members") == "a-chord-of-10000-members"


def test_the_check_sees_links_in_prose_only() -> None:
    text = "[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n![d](e.png) [web](https://x.org)"
    assert _LINK.findall(prose(text)) == ["x.md", "e.png", "https://x.org"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_its_anchor(page: Path) -> None:
    links = relative_links(page)
    assert links, f"{page} links nowhere"
    broken = []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(link)
        elif anchor and (target.suffix != ".md" or anchor not in anchors(target)):
            broken.append(link)
    assert broken == []


def test_every_page_of_docs_is_linked_from_the_readme_or_the_docs_index() -> None:
    linked = {
        (page.parent / link.partition("#")[0]).resolve()
        for page in (REPO / "README.md", DOCS / "README.md")
        for link in relative_links(page)
    }
    assert sorted(p.name for p in DOCS.glob("*.md") if p.resolve() not in linked) == []


def test_every_screenshot_in_docs_is_shown() -> None:
    shown = {
        (page.parent / link.partition("#")[0]).resolve()
        for page in PAGES
        for link in relative_links(page)
    }
    pictures = sorted(DOCS.glob("*.png"))
    assert pictures
    assert [p.name for p in pictures if p.resolve() not in shown] == []
