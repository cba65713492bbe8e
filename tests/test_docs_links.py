"""The documentation's links resolve: every relative link in README.md, docs/, models/ and
deploy/ names a file that exists and, with a #fragment, a heading of that file (GitHub's
anchors); and the contents lists at the top of docs/evaluation.md and docs/models.md name
every section of their page, so a new section cannot be left out of them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("models/*.md"), *ROOT.glob("deploy/*.md"),
                ROOT / "tests" / "orthanc" / "README.md"])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) (.*)$")


def _outside_code(text: str) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _headings(path: Path) -> list[tuple[int, str]]:
    """(level, GitHub anchor) of each heading: lower case, punctuation but - and _ dropped,
    spaces as -, a repeated anchor numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    found = []
    for line in _outside_code(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.append((len(m.group(1)), slug if n == 0 else f"{slug}-{n}"))
    return found


def _links(path: Path) -> list[str]:
    text = "\n".join(_outside_code(path.read_text(encoding="utf-8")))
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans are not links
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_anchor_rule_matches_githubs_on_known_headings(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# A\n## The map's floor: `init_floor` (thirteenth session)\n## Cost\n## Cost\n")
    assert [a for _, a in _headings(page)] == ["a", "the-maps-floor-init_floor-thirteenth-session", "cost", "cost-1"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in _links(page):
        file, _, fragment = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in {a for _, a in _headings(dest)}:
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


@pytest.mark.parametrize("name", ["docs/evaluation.md", "docs/models.md"])
def test_the_contents_list_names_every_section(name):
    page = ROOT / name
    listed = {t.lstrip("#") for t in _links(page) if t.startswith("#")}
    sections = {a for level, a in _headings(page) if level in (2, 3)}
    assert sections - listed == set(), "sections missing from the contents list"
