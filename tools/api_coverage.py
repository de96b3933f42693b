"""Rewrite the API-coverage table in README.md from jaxserve.http.field_support.

python tools/api_coverage.py          # update README.md in place
python tools/api_coverage.py --print  # print the table
"""

from __future__ import annotations

import sys
from pathlib import Path

from jaxserve.http.coverage import coverage_markdown, replace_between_markers

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    table = coverage_markdown()
    if "--print" in sys.argv:
        print(table)
        return
    README.write_text(replace_between_markers(README.read_text(), table))


if __name__ == "__main__":
    main()
