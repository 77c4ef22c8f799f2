"""The documentation against the code: every failure the engine can report has its entry in the
troubleshooting guide, and every relative link of the Markdown pages leads to a file that exists
(and, within the repository's pages, to a heading that exists)."""

from __future__ import annotations

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]
FAILURES = REPO / "src" / "engine" / "failure.rs"
TROUBLESHOOTING = REPO / "docs" / "guides" / "troubleshooting.md"
ENUMS = ("BuildError", "Failure", "UpdateError", "DeleteError")


def variants(source: str, enum: str) -> set[str]:
    """The variants of `pub enum ENUM { ... }` in `source` (one level of braces deep)."""
    start = re.search(rf"^pub enum {enum} \{{\n", source, re.M)
    assert start, f"no enum {enum} in {FAILURES}"
    body = source[start.end():source.index("\n}\n", start.end())]
    return set(re.findall(r"^    ([A-Z][A-Za-z0-9]*)\b", body, re.M))


def test_every_failure_has_an_entry_in_the_troubleshooting_guide():
    source = FAILURES.read_text()
    wanted = {f"{enum}::{variant}" for enum in ENUMS for variant in variants(source, enum)}
    assert len(wanted) > 40, wanted
    named: list[str] = []
    for comment in re.findall(r"<!-- ((?:[A-Za-z]+::[A-Za-z0-9]+(?:, )?)+) -->", TROUBLESHOOTING.read_text()):
        named += comment.split(", ")
    repeated = sorted({n for n in named if named.count(n) > 1})
    assert not repeated, f"in more than one entry: {repeated}"
    assert sorted(wanted - set(named)) == [], "failures without an entry in docs/guides/troubleshooting.md"
    assert sorted(set(named) - wanted) == [], "entries naming failures the code does not have"


def anchors(page: pathlib.Path) -> set[str]:
    """The anchors GitHub gives the headings of `page`."""
    found = set()
    in_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return found


def test_relative_links_lead_somewhere():
    pages = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").rglob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            where = (page.parent / path).resolve() if path else page
            if not where.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(where):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert broken == [], "\n".join(broken)
