"""Every local link in README.md and docs/*.md resolves: the file exists, and a `#anchor` names a heading."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 300

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"`+[^`]*`+")
# [text](target) or ![alt](target "title"); the text may hold one level of brackets.
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


class Link(NamedTuple):
    source: Path
    line: int
    target: str


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _lines_outside_fences(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            fence = None if fence == match.group(1) else (fence or match.group(1))
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def local_links(source: Path) -> list[Link]:
    """The links of one markdown file that point into the repository (no scheme: not http, mailto, ...)."""
    links: list[Link] = []
    for number, raw in _lines_outside_fences(source.read_text(encoding="utf-8")):
        line = _CODE_SPAN.sub("", raw)  # a link inside a code span is an example, not a link
        targets = [m.group(1) for m in _INLINE_LINK.finditer(line)]
        definition = _REFERENCE_DEFINITION.match(line)
        if definition:
            targets.append(definition.group(1))
        links += [Link(source, number, t) for t in targets if not _URL_SCHEME.match(t)]
    return links


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    """Every anchor the headings of a markdown file define (repeats get -1, -2, ... as on GitHub)."""
    seen: Counter[str] = Counter()
    found: set[str] = set()
    for _, line in _lines_outside_fences(document.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        anchor = heading_anchor(match.group(2))
        found.add(f"{anchor}-{seen[anchor]}" if seen[anchor] else anchor)
        seen[anchor] += 1
    return found


def _resolve(link: Link) -> tuple[Path, str]:
    path_part, _, anchor = link.target.partition("#")
    target = link.source if not path_part else (link.source.parent / path_part).resolve()
    return target, anchor


def _all_links() -> list[Link]:
    return [link for document in _documents() for link in local_links(document)]


def _where(link: Link) -> str:
    return f"{link.source.relative_to(ROOT)}:{link.line}: {link.target}"


def test_every_local_link_in_readme_and_docs_points_at_an_existing_file() -> None:
    """A relative link from README.md or docs/*.md names a file or folder that exists in the checkout."""
    links = _all_links()
    assert len(links) > 20, "the link collector found almost nothing: is the pattern broken?"
    broken = [_where(link) for link in links if not _resolve(link)[0].exists()]
    assert not broken, "links to missing files:\n" + "\n".join(broken)


def test_every_anchor_in_a_local_link_names_a_heading_of_its_file() -> None:
    """A `file.md#anchor` (or `#anchor`) link names a heading that file has, by GitHub's anchor rules."""
    checked, broken = 0, []
    for link in _all_links():
        target, anchor = _resolve(link)
        if not anchor or target.suffix != ".md" or not target.is_file():
            continue
        checked += 1
        if anchor not in anchors(target):
            broken.append(_where(link))
    assert checked > 5, "no anchored links were checked: is the pattern broken?"
    assert not broken, "links to missing headings:\n" + "\n".join(broken)


def test_heading_anchor_follows_githubs_rules() -> None:
    """Lower case, punctuation and backticks dropped, spaces to hyphens, hyphens and underscores kept."""
    assert heading_anchor("The Celery contract") == "the-celery-contract"
    assert heading_anchor("What comes back, and what is promised") == "what-comes-back-and-what-is-promised"
    assert heading_anchor("1. Per-provider cap (`ProviderSlots`)") == "1-per-provider-cap-providerslots"
    assert heading_anchor("Inside `make test`, make_test") == "inside-make-test-make_test"


def test_links_inside_code_are_not_collected(tmp_path: Path) -> None:
    """Links in fenced blocks and code spans are examples, not links; reference definitions are links."""
    page = tmp_path / "page.md"
    page.write_text(
        "see [a](a.md) and `[b](b.md)`\n```\n[c](c.md)\n```\n[d]: d.md\n[e](https://example.com/e.md)\n",
        encoding="utf-8",
    )
    assert [link.target for link in local_links(page)] == ["a.md", "d.md"]


def test_readme_stays_a_front_page_of_at_most_300_lines() -> None:
    """The README is the front page; the reference lives in docs/ (issue 15)."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move reference material to docs/"
