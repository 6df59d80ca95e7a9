"""The README and docs/ stand alone: every file they name is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(
    r"`((?:services|schemas|kndpeers|tests|deploy|docs|scripts|bench|protos)/[\w./-]*)`")
LINK = re.compile(r"\]\((?!https?://|#)([^)#]+)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_files_and_links_are_in_the_repository(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "DESIGN.md" not in text
    missing = [p for p in PATH.findall(text) if not (ROOT / p).exists()]
    missing += [p for p in LINK.findall(text) if not (doc.parent / p).exists()]
    assert not missing, missing


def test_the_readme_points_to_the_architecture() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
