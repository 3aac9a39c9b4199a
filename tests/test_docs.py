"""The documentation holds together inside the repository: every relative link
of a Markdown page resolves to a file of the clone, and every #anchor to a
heading of its page (GitHub's slugs); no page sends a reader outside it."""
import re
from pathlib import Path

import pytest

from .conftest import REPO

PAGES = sorted(p for p in [*REPO.glob("*.md"), *REPO.glob("docs/*.md"), *REPO.glob("deploy/**/*.md"),
                           *REPO.glob("examples/*.md"), *REPO.glob("tests/data/*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)|<img src=\"([^\"]+)\"")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_of_a_page_resolves_inside_the_repository(page):
    broken = []
    for match in LINK.finditer(page.read_text()):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z]+:", target):
            continue  # an address on the web
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if REPO not in resolved.parents and resolved != REPO or not resolved.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(REPO)}")
    assert broken == []


def test_no_page_points_outside_the_clone():
    outside = [f"{p.relative_to(REPO)}: {line.strip()}" for p in PAGES for line in p.read_text().splitlines()
               if "../shared" in line and p.name != "contract.md" and "beside" not in line]
    assert outside == []
