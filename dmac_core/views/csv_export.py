"""CSV downloads that a spreadsheet opens as text: a cell that starts like a formula (``=``,
``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with ``'``, so a prompt or an
answer written to run a formula in Excel or LibreOffice stays the text it was."""

from __future__ import annotations

from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def inert_cell(value: Any) -> Any:
    """``value`` as a spreadsheet shows it without evaluating it (numbers stay numbers)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV with every text cell made inert (see the module docstring)."""
    safe = frame.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(inert_cell)
    return safe.to_csv(index=False).encode("utf-8")
