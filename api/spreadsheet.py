"""CSV cells a spreadsheet will not run: OWASP's advice against formula injection.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as
a formula by Excel, LibreOffice and Sheets (``=HYPERLINK(...)`` as a recipient's name).
Such a cell is written with a leading single quote, which those programs show as text;
numbers stay numbers.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet evaluates."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def inert_row(values: list[Any]) -> list[Any]:
    return [inert(v) for v in values]
