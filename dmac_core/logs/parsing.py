"""Parsing the learning logs: one line with orjson, or a whole chunk of lines with Arrow.

Used by :mod:`dmac_core.logs.store`. A line is a record when it is a JSON object whose required
keys have the right types (enough to tell a record from a fragment that happens to be JSON,
without paying for full validation of millions of lines on every read). Arrow parses
interaction chunks much faster than Python, but refuses a whole chunk for one bad line, so a
refused chunk is bisected down to its broken lines, which are checked one by one.
"""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # pandas and pyarrow load lazily: processes that only append start fast
    import pandas as pd
    import pyarrow as pa

# The type each required key must have (bool is refused where an int is required).
_REQUIRED_TYPES: dict[str, type] = {"rating": int, "metrics": dict}
_BISECT_LEAF_LINES = 32  # below this many lines a refused chunk is checked line by line


@functools.cache
def pyarrow_modules() -> SimpleNamespace:
    """pyarrow and the interaction schema, imported on first read (not by writers)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json

    text = pa.large_string()  # what pandas' "str" dtype holds: no copy when building the frame
    schema = pa.schema(
        [
            ("schema", pa.int64()),
            ("id", text),
            ("ts", text),
            ("user", text),
            ("session_id", text),
            ("model", text),
            ("provider_model", text),
            ("model_version", text),
            ("messages", pa.list_(pa.struct([("role", text), ("content", text)]))),
            ("prompt", text),
            ("response", text),
            ("latency_ms", pa.float64()),
            ("tokens_in", pa.int64()),
            ("tokens_out", pa.int64()),
            ("route_reason", text),
            ("error", text),
        ]
    )
    return SimpleNamespace(
        pa=pa,
        pc=pc,
        schema=schema,
        read_json=pa_json.read_json,
        parse=pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"),
        ts_type=pa.timestamp("ms", tz="UTC"),
        errors=(pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError),
    )


def parse_line(raw: bytes, required: tuple[str, ...]) -> dict[str, Any] | None:
    """One log line as a dict, or None when it is not a readable record."""
    raw = raw.strip()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:].lstrip()
    if not raw.startswith(b"{"):
        return None
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # the stdlib also accepts NaN / Infinity, which older writers may have produced
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
    if not isinstance(row, dict):
        return None
    for key in required:
        value = row.get(key)
        if not isinstance(value, _REQUIRED_TYPES.get(key, str)) or isinstance(value, bool):
            return None
    return row


def parse_lines(chunk: bytes, required: tuple[str, ...]) -> tuple[list[dict[str, Any]], int]:
    rows, skipped = [], 0
    for raw in chunk.split(b"\n"):
        if not raw.strip():
            continue  # blank lines (our own fresh-line separators) are not errors
        row = parse_line(raw, required)
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return rows, skipped


def _arrow_table(data: bytes, required: tuple[str, ...]) -> tuple[pa.Table, int]:
    """Parse complete lines with Arrow; raise ``pa.ArrowInvalid`` on anything it refuses."""
    A = pyarrow_modules()
    pa, pc = A.pa, A.pc
    # (A large chunk of only blank lines makes Arrow raise; the bisection then handles it.)
    if not data or (len(data) < 65536 and not data.strip()):
        return A.schema.empty_table(), 0
    table = A.read_json(pa.BufferReader(data), parse_options=A.parse)
    if not data.isascii():
        table.validate(full=True)  # Arrow does not check UTF-8 while parsing; this does
    valid = None
    for key in required:
        present = pc.is_valid(table.column(key))
        valid = present if valid is None else pc.and_(valid, present)
    missing = table.num_rows - pc.sum(valid).as_py() if table.num_rows else 0
    if missing:  # JSON objects that are not records (e.g. "{}"): skipped like broken lines
        table = table.filter(valid)
    return table, missing


def parse_arrow(chunk: bytes, required: tuple[str, ...]) -> tuple[pa.Table, int]:
    """Readable rows of a chunk of complete lines and how many lines were skipped.

    Arrow refuses a whole chunk for one bad line, so a refused chunk is split in halves
    until the bad lines are isolated; those small pieces are checked line by line.
    """
    A = pyarrow_modules()
    try:
        return _arrow_table(chunk, required)
    except A.errors:
        pass
    tables: list[pa.Table] = []
    skipped = 0
    stack = [chunk.split(b"\n")]
    while stack:
        lines = stack.pop()
        if len(lines) > _BISECT_LEAF_LINES:
            try:
                table, missing = _arrow_table(b"\n".join(lines), required)
                tables.append(table)
                skipped += missing
                continue
            except A.errors:
                middle = len(lines) // 2
                stack.append(lines[middle:])  # pushed first, popped last: keeps file order
                stack.append(lines[:middle])
                continue
        good = []
        for raw in lines:
            if not raw.strip():
                continue
            if parse_line(raw, required) is None:
                skipped += 1
            else:
                good.append(raw.strip().removeprefix(b"\xef\xbb\xbf"))
        if good:
            # Lines Python accepts but Arrow cannot type (a number where text belongs) raise
            # here; the store then serves that log through its slower Python path.
            table, missing = _arrow_table(b"\n".join(good), required)
            tables.append(table)
            skipped += missing
    tables = [t for t in tables if t.num_rows] or [A.schema.empty_table()]
    return A.pa.concat_tables(tables, promote_options="permissive"), skipped


def string_type(dtype: pa.DataType) -> Any:
    import numpy as np
    import pandas as pd

    pa = pyarrow_modules().pa
    if pa.types.is_large_string(dtype) or pa.types.is_string(dtype):
        return pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype
    if pa.types.is_nested(dtype):
        return pd.ArrowDtype(dtype)
    return None


def records_frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype="object")
    if len(frame):
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601", errors="coerce")
    else:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame
