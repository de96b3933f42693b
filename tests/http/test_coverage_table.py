"""The README's API-coverage table is the one generated from the field-support table."""

from __future__ import annotations

from pathlib import Path

from jaxserve.http.coverage import coverage_markdown, replace_between_markers
from jaxserve.http.field_support import FIELD_SUPPORT

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def test_readme_table_is_current() -> None:
    text = README.read_text()
    assert replace_between_markers(text, coverage_markdown()) == text, "run: python tools/api_coverage.py"


def test_table_has_a_row_per_field() -> None:
    table = coverage_markdown()
    for name in FIELD_SUPPORT:
        assert f"| `{name}` |" in table
