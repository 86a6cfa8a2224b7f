"""Maintenance of the learning logs: doctor, import, export and line-by-line rewrites.

Every rewrite of a log file happens under the store's write lock of that kind (writers wait),
goes to a temporary file that is fsync-ed, renamed over the log, and the directory is synced:
a crash leaves either the old file or the new one, never a mix. Nothing readable is dropped
by ``doctor``; the unreadable lines it removes are kept in ``<file>.quarantine.jsonl``.
Deleting one user everywhere under the data directory is :mod:`dmac_core.privacy.deletion`,
which rewrites log lines with :func:`edit_lines`.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from ..fsio import append_lines, atomic_write_bytes
from .parsing import parse_line
from .records import Record, RecordError, validate_record
from .snapshot import discard_snapshot
from .store import KINDS, REQUIRED_FIELDS, LearningStore, dump_record

Progress = Callable[[int, int], None] | None
"""Called as ``progress(done, total)``; units are bytes for file scans, rows otherwise."""


@dataclass
class FileCheck:
    """What ``doctor`` found in one log file (and did, with ``fix``)."""

    path: str
    records: int = 0
    unreadable: int = 0
    partial_tail: bool = False
    quarantined: int = 0

    @property
    def healthy(self) -> bool:
        return self.unreadable == 0 and not self.partial_tail


@dataclass
class ImportReport:
    interactions: int = 0
    feedback: int = 0
    refused: list[str] = field(default_factory=list)  # "line N: why", one per refused row


# -- atomic rewrites ---------------------------------------------------------------------
def _lines(data: bytes) -> list[bytes]:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _replace_atomically(path: Path, lines: Iterable[bytes]) -> None:
    """Replace ``path`` by ``lines`` all at once (temp file, fsync, rename, directory sync)."""
    atomic_write_bytes(path, b"".join(line + b"\n" for line in lines))
    discard_snapshot(path)  # it may hold lines that were just removed (delete-user, quarantine)


def quarantine_path(path: Path) -> Path:
    """Where ``doctor --fix`` keeps the unreadable lines of ``path``."""
    return path.with_name(path.name + ".quarantine.jsonl")


def doctor(store: LearningStore, fix: bool = False, progress: Progress = None) -> list[FileCheck]:
    """Check every log file; with ``fix`` move unreadable lines to the quarantine file.

    A last line without a newline counts as unreadable: under the lock no write is in
    progress, so it is a fragment a killed writer left behind.
    """
    files = [(kind, path) for kind in KINDS for path in store.month_files(kind)]
    total = sum(path.stat().st_size for _kind, path in files)
    done = 0
    checks = []
    for kind, path in files:
        check = FileCheck(path=f"{kind}/{path.name}")
        with store.locked(kind):
            data = path.read_bytes()
            keep: list[bytes] = []
            bad: list[bytes] = []
            for raw in _lines(data):
                if not raw.strip():
                    continue
                if parse_line(raw, REQUIRED_FIELDS[kind]) is None:
                    bad.append(raw)
                else:
                    keep.append(raw)
            check.records, check.unreadable = len(keep), len(bad)
            check.partial_tail = bool(data) and not data.endswith(b"\n")
            if fix and bad:
                # Quarantine first: if we crash before the rename, the bad lines exist twice,
                # never zero times.
                append_lines(quarantine_path(path), bad)
                _replace_atomically(path, keep)
                check.quarantined = len(bad)
        checks.append(check)
        done += len(data)
        if progress:
            progress(done, total)
    return checks


# -- import ------------------------------------------------------------------------------
def _read_rows(path: Path) -> Iterable[tuple[int, dict[str, Any] | None]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for number, row in enumerate(csv.DictReader(handle), start=2):
                yield number, {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        return
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError):
                yield number, None
                continue
            yield number, row if isinstance(row, dict) else None


def _append_many(store: LearningStore, kind: str, records: list[Record]) -> None:
    """Append records in bulk: one lock, one fsync per month file (imports are large)."""
    by_month: dict[str, list[bytes]] = defaultdict(list)
    for record in records:
        by_month[record.month()].append(dump_record(record.to_json_dict()))
    with store.locked(kind):
        for month, lines in sorted(by_month.items()):
            append_lines(store.kind_dir(kind) / f"{month}.jsonl", lines)


def import_conversations(store: LearningStore, path: str | os.PathLike[str], progress: Progress = None,
                         model: str = "imported") -> ImportReport:
    """Import past conversations from a JSONL or CSV file.

    Columns: ``prompt``, ``response``, optional ``model``, ``ts``, ``rating`` (1..5),
    ``feedback``, ``user``. A row with a rating also gets a feedback record linked to its
    interaction. Records keep their timestamps, so old rows land in their own month files.
    Refused rows are listed in the report; the others are written.
    """
    source = Path(path)
    report = ImportReport()
    rows = list(_read_rows(source))
    interactions: list[Record] = []
    feedback: list[Record] = []
    for done, (number, row) in enumerate(rows, start=1):
        if progress and (done % 1000 == 0 or done == len(rows)):
            progress(done, len(rows))
        if row is None:
            report.refused.append(f"line {number}: not a JSON object")
            continue
        try:
            fields = {"prompt": row.get("prompt"), "response": row.get("response"),
                      "model": row.get("model") or model, "user": row.get("user") or "anonymous",
                      "route_reason": f"import:{source.name}"}
            if row.get("ts"):
                fields["ts"] = str(row["ts"])
            interaction = validate_record("interactions", fields)
            rated = None
            if row.get("rating") not in (None, ""):
                rating = row["rating"]
                if isinstance(rating, str) and rating.strip().isdigit():
                    rating = int(rating)  # CSV cells are text
                rated = validate_record("feedback", {
                    "prompt": interaction.prompt, "response": interaction.response,  # type: ignore[attr-defined]
                    "rating": rating, "feedback": str(row.get("feedback") or ""),
                    "interaction_id": interaction.id, "user": fields["user"], "ts": interaction.ts})
        except RecordError as exc:
            report.refused.append(f"line {number}: {exc}")
            continue
        interactions.append(interaction)
        if rated is not None:
            feedback.append(rated)
    _append_many(store, "interactions", interactions)
    _append_many(store, "feedback", feedback)
    report.interactions, report.feedback = len(interactions), len(feedback)
    return report


# -- export ------------------------------------------------------------------------------
def _user_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def training_rows(store: LearningStore, min_rating: int = 4, max_negative: int = 2) -> dict[str, list[dict[str, Any]]]:
    """Rated answers in the conversational shapes TRL reads.

    ``sft``: prompt/completion of answers rated ``>= min_rating`` and of corrections;
    ``kto``: prompt/completion/label (True for good, False for ``<= max_negative``);
    ``dpo``: prompt/chosen/rejected pairs of answers to the same prompt with different ratings
    (a correction is preferred over the answer it corrects).
    """
    sft, kto, dpo = [], [], []
    by_prompt: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for row in store.feedback(latest_only=True).to_dict("records"):
        prompt, response, rating = str(row["prompt"]), str(row["response"]), int(row["rating"])
        correction = row.get("correction")
        if rating >= min_rating:
            sft.append({"prompt": _user_turn(prompt), "completion": _assistant_turn(response)})
            kto.append({"prompt": _user_turn(prompt), "completion": _assistant_turn(response), "label": True})
        elif rating <= max_negative:
            kto.append({"prompt": _user_turn(prompt), "completion": _assistant_turn(response), "label": False})
        by_prompt[prompt].append((rating, response))
        if isinstance(correction, str) and correction.strip():
            sft.append({"prompt": _user_turn(prompt), "completion": _assistant_turn(correction)})
            dpo.append({"prompt": _user_turn(prompt), "chosen": _assistant_turn(correction),
                        "rejected": _assistant_turn(response)})
    for prompt, answers in by_prompt.items():
        answers.sort(key=lambda a: -a[0])
        best_rating, best = answers[0]
        for rating, response in answers[1:]:
            if rating < best_rating and response != best:
                dpo.append({"prompt": _user_turn(prompt), "chosen": _assistant_turn(best),
                            "rejected": _assistant_turn(response)})
    return {"sft": sft, "kto": kto, "dpo": dpo}


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    # Free-form nested cells (eval metrics, per-item lists) may not share one Arrow type:
    # store those columns as JSON text rather than fail the export.
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            sample = frame[column].dropna()
            if len(sample) and isinstance(sample.iloc[0], (dict, list)):
                frame[column] = frame[column].map(lambda v: None if v is None else json.dumps(v, ensure_ascii=False))
    return frame


def _write_parquet(frame: pd.DataFrame, target: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Without pandas' metadata: pandas cannot read back its own name for nested Arrow dtypes
    # ("list<...>[pyarrow]"), and other readers (DuckDB, Spark, datasets) ignore it anyway.
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, target)


def export(store: LearningStore, out_dir: str | os.PathLike[str], fmt: str, progress: Progress = None,
           min_rating: int = 4, max_negative: int = 2) -> dict[str, Path]:
    """Export the logs: ``parquet`` (one file per kind) or ``jsonl`` (SFT, KTO, DPO files)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    if fmt == "parquet":
        frames = {"interactions": store.interactions, "feedback": lambda: store.feedback(latest_only=False),
                  "evals": store.evals, "votes": store.votes, "judgments": store.judgments}
        for done, (name, load) in enumerate(frames.items(), start=1):
            target = out / f"{name}.parquet"
            _write_parquet(_parquet_safe(load()), target)
            written[name] = target
            if progress:
                progress(done, len(frames))
    elif fmt == "jsonl":
        sets = training_rows(store, min_rating, max_negative)
        total = sum(len(rows) for rows in sets.values())
        done = 0
        for name, rows in sets.items():
            target = out / f"{name}.jsonl"
            with open(target, "wb") as handle:
                for row in rows:
                    handle.write(dump_record(row) + b"\n")
                    done += 1
                    if progress and (done % 1000 == 0 or done == total):
                        progress(done, total)
            written[name] = target
    else:
        raise ValueError(f"unknown export format {fmt!r}: use 'parquet' or 'jsonl'")
    return written


# -- line edits (used by delete-user) ---------------------------------------------------
def edit_lines(path: Path, edit: Callable[[bytes], bytes | None]) -> int:
    """Pass every non-blank line of ``path`` through ``edit`` (the line to keep, changed or not,
    or None to drop it) and replace the file atomically when any line changed; return how many
    changed or went. A missing file has none. The caller holds the write lock of what ``path``
    belongs to, so no append lands between the read and the rename."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    keep: list[bytes] = []
    changed = 0
    for raw in _lines(data):
        if not raw.strip():
            keep.append(raw)
            continue
        out = edit(raw)
        if out is None or out != raw:
            changed += 1
        if out is not None:
            keep.append(out)
    if changed:
        _replace_atomically(path, keep)
    return changed
