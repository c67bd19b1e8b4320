"""README and docs/: every relative link leads to a file that exists, every docs page is reachable
from the README, and the README stays a page a newcomer reads (issue 25 item 6)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)


def _relative_links_of(text: str) -> list[str]:
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def _relative_links(page: Path) -> list[str]:
    return _relative_links_of(page.read_text())


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_an_existing_file_and_heading(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in _relative_links(ROOT / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 160, "details belong in docs/, linked from README"


NUMBER = re.compile(r"(?<![\w.])\d[\d,]*\.\d+|(?<![\w.])\d{1,3}(?:,\d{3})+")  # 0.9519, 1,000,000: not "15" or "3"


def _source_text(link: str) -> str:
    """The text of a published report and of every file generated beside it (tables, captions, provenance)."""
    target = ROOT / link.partition("#")[0]
    files = [p for p in target.parent.rglob("*") if p.suffix in (".md", ".csv", ".tex", ".json")] \
        if target.name == "README.md" and target.parent != ROOT / "results" else [target]
    return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())


def published_numbers_not_in_their_source(readme: str) -> list[str]:
    """Each number of README's 'Published results' (decimals and 1,000-style integers) that does not appear in the
    report its paragraph or bullet links (a bullet without a link reads the last one linked before it)."""
    section = readme.split("\n## Published results")[1].split("\n## ")[0]
    missing, source = [], ""
    for block in re.split(r"\n(?=- )|\n\n", section):
        links = [t for t in _relative_links_of(block) if t.startswith("results/")]
        if links:
            source = _source_text(links[0])
        for number in NUMBER.findall(block):
            if number not in source and number.replace(",", "") not in source:
                missing.append(f"{number} ({block.strip()[:60]}...)")
    return missing


def test_every_number_in_the_readmes_results_comes_from_the_report_it_cites():
    readme = (ROOT / "README.md").read_text()
    assert not published_numbers_not_in_their_source(readme)
    # the check has teeth: a number changed in the README is caught
    assert published_numbers_not_in_their_source(readme.replace("0.9512", "0.9521", 1))
