#!/usr/bin/env python3
"""Rewrite README.md's option table from the settings table (services/common/settings.py).

    .venv/bin/python scripts/readme_settings.py

tests/test_settings.py fails while the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common import settings  # noqa: E402

BEGIN, END = "<!-- settings: begin -->\n", "<!-- settings: end -->"


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + settings.markdown() + text[stop:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
