"""The README's API-coverage table, generated from the field-support table (never typed by hand)."""

from __future__ import annotations

from jaxserve.http.field_support import FIELD_SUPPORT, Support

START_MARKER = "<!-- api-coverage:start -->"
END_MARKER = "<!-- api-coverage:end -->"


def coverage_markdown() -> str:
    """One row per ChatCompletionRequest field: supported or refused with a 400, and the detail."""
    lines = ["| field | status | detail |", "|---|---|---|"]
    for name, policy in FIELD_SUPPORT.items():
        if policy.support is Support.SUPPORTED:
            status = "supported"
        elif policy.support is Support.REFUSED:
            status = "400 when set"
        else:
            status = "400 when set (not yet)"
        detail = policy.note.replace("|", "\\|")
        lines.append(f"| `{name}` | {status} | {detail} |")
    return "\n".join(lines)


def replace_between_markers(text: str, table: str) -> str:
    """`text` with the part between the coverage markers replaced by `table`."""
    start = text.index(START_MARKER) + len(START_MARKER)
    end = text.index(END_MARKER)
    return text[:start] + "\n" + table + "\n" + text[end:]
