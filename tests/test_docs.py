"""The README and docs/ stay short, and their relative links lead somewhere."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
DOCS_PAGE_MAX_LINES = 300

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("**/*.md"))


def outside_code_blocks(text):
    """The lines of a markdown text outside fenced code blocks."""
    inside = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            inside = not inside
        elif not inside:
            yield line


def anchors(path):
    """GitHub's heading anchors of a markdown file."""
    found = set()
    for line in outside_code_blocks(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m:
            found.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return found


def relative_links(path):
    for line in outside_code_blocks(path.read_text(encoding="utf-8")):
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                yield target


def test_readme_length():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines, more than {README_MAX_LINES}"


def test_docs_exist():
    assert list((ROOT / "docs").glob("*.md")), "docs/ holds no markdown page"


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("**/*.md")), ids=lambda p: p.name)
def test_docs_page_length(page):
    n = len(page.read_text(encoding="utf-8").splitlines())
    assert n <= DOCS_PAGE_MAX_LINES, \
        f"{page.relative_to(ROOT)} has {n} lines, more than {DOCS_PAGE_MAX_LINES}"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    broken = []
    for target in relative_links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / unquote(file_part)).resolve() if file_part else page
        if not dest.exists():
            shown = dest.relative_to(ROOT) if ROOT in dest.parents else dest
            broken.append(f"{target} (no file {shown})")
        elif ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{target} (outside the repository)")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken relative links: " + "; ".join(broken)
