"""Delete one user's data from the whole data directory, resumably (``delete-user``).

Every place under ``<data_dir>`` that holds a prompt, an answer, a comment or a correction,
and what happens there:

- ``interactions/``, ``feedback/`` (the logs): their records go, and so do feedback by others
  on their interactions (it repeats their prompt and answer), the workbench's own teacher
  rewrite requests and evaluation calls that quote their question (purpose ``teacher`` or
  ``evaluation``), ratings of those, and unreadable fragments naming them;
- ``votes/`` (blind comparisons): their votes go, and so does anyone's vote on a pair that
  holds one of their answers (it repeats their question); training examples made from those
  votes go with the runs' datasets below;
- ``evals/``: their rows leave each record's ``per_item`` list; the record keeps ``n`` and its
  metrics as measured and is marked ``"redacted": true`` with ``redacted_items`` (so nobody
  reads the metrics as computed on the rows shown), and loses its ``eval_key`` (a redacted
  record is never reused as a whole result);
- ``.<month>.jsonl.arrow`` snapshots of rewritten logs, and stale ones a crash left behind;
- ``<log>.quarantine.jsonl`` (lines ``doctor --fix`` moved aside): lines naming them go;
- ``runs/<id>/data.json`` (each run's dataset): their examples go, the lineage notes how many;
  ``run.json`` and ``events.jsonl``: their items (the gate's per-answer lists) go;
- ``models*/v*/version.json``: the gate's per-answer items that are theirs go; the weights
  and ``scope.npy`` cannot be untrained, so the versions trained on their data are reported;
- ``teacher/rewrites.jsonl``: rewrites of their answers (by feedback id);
- ``replay/answers.jsonl``: answers to a replay prompt that is one of their questions;
- ``insights/confidence.jsonl`` (token scores of their answers), ``insights/embeddings-*.bin``
  (vectors of their texts), ``insights/topics.json`` (labels drawn from prompts: removed,
  rebuilt on the next visit);
- ``exports/`` (the default output of ``export``): their JSONL rows go; a Parquet export
  holding any of their rows is removed (export again);
- ``images/``: images only their records referenced (one someone else also sent stays);
- ``judgments/`` (an LLM judge's labels): labels of their interactions (and of the judge calls
  that quote them), and labels they asked for;
- ``signals/second_opinions.jsonl``: assignments of their answers, to them or by them;
- hidden ``*.tmp`` files of writers that died mid-write and hold their text.

A crash at any point followed by a re-run finishes the job: the ids found are written to the
journal (:mod:`.journal`) before any file is rewritten, each place is one phase marked done
in the journal once cleaned, and the places recognised by text are cleaned before the logs
(the source of that text) are rewritten. Every rewrite is atomic (temporary file, fsync,
rename); the interaction, feedback and vote logs stay locked for the whole deletion, the evals log
while it is cleaned, and no training run may be going on (its lock is taken).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..evaluation.splits import normalize_prompt
from ..fsio import atomic_write_bytes, atomic_write_json, exclusive_lock, open_locked
from ..insights.embeddings import CACHE_NAME as EMBEDDINGS_CACHE
from ..insights.embeddings import DIM, text_digest
from ..learner.registry import ModelRegistry
from ..logs.maintenance import edit_lines
from ..logs.parsing import parse_line
from ..logs.snapshot import discard_snapshot, load_snapshot, snapshot_path
from ..logs.store import KINDS, REQUIRED_FIELDS, LearningStore, dump_record
from ..serving.attachments import ImageError, image_path
from .footprint import Footprint, image_refs
from .journal import Journal

Progress = Callable[[int, int], None] | None

# Where the caches live; their writers name the same paths (training.job, training.replay,
# system.py for the confidence scores, insights.topics).
TEACHER_CACHE = Path("teacher") / "rewrites.jsonl"
REPLAY_CACHE = Path("replay") / "answers.jsonl"
CONFIDENCE_CACHE = Path("insights") / "confidence.jsonl"
TOPICS_CACHE = Path("insights") / "topics.json"
SECOND_OPINIONS = Path("signals") / "second_opinions.jsonl"  # as signals.second_opinion writes it
_EMBEDDING_RECORD = 32 + DIM * 4  # sha256 digest + float32 vector, as insights.embeddings writes them
_TEMP_PID = re.compile(r"\.(\d+)(?:\.\d+)?\.tmp$")  # fsio's and the snapshot writer's temp names


class DeletionRefused(RuntimeError):
    """The deletion cannot start now (a training run is in progress); nothing was changed."""


@dataclass
class DeletionReport:
    """What a deletion removed, per place, and the model versions trained on the user's data."""

    user: str
    removed: dict[str, int] = field(default_factory=dict)  # place → records, rows or files removed
    runs: list[str] = field(default_factory=list)  # runs whose dataset held their examples
    versions: list[str] = field(default_factory=list)  # versions those runs registered: retire them
    resumed: bool = False  # this call finished a deletion an earlier one started

    @property
    def total(self) -> int:
        return sum(self.removed.values())


@dataclass
class _Job:
    store: LearningStore
    footprint: Footprint
    journal: Journal
    needles: list[bytes]

    @property
    def data_dir(self) -> Path:
        return self.store.data_dir

    def raw_match(self, raw: bytes) -> bool:
        return self.footprint.raw_match(raw, self.needles)


def delete_user_data(store: LearningStore, user: str, progress: Progress = None) -> DeletionReport:
    """Remove or redact everything of ``user`` under the store's data directory (see the
    module docstring for the places); resumes an interrupted deletion of the same user.

    Raises :class:`DeletionRefused` while a training run holds the training lock.
    """
    data_dir = store.data_dir
    phases: list[tuple[str, Callable[[_Job], dict[str, int]]]] = [
        ("evals", _evals), ("runs", _runs), ("models", _models), ("teacher", _teacher), ("replay", _replay),
        ("insights", _insights), ("exports", _exports), ("quarantine", _quarantine), ("temp files", _temp_files),
        ("images", _images), ("judgments", _judgments), ("second opinions", _second_opinions), ("logs", _logs),
    ]
    with ExitStack() as stack:
        stack.enter_context(_TrainingLock(data_dir / "runs"))
        stack.enter_context(store.locked("interactions"))
        stack.enter_context(store.locked("feedback"))
        stack.enter_context(store.locked("votes"))
        journal = Journal.open(data_dir, user)
        footprint = _scan(store, user, journal)
        # Before any file changes: a re-run must know these ids once their records are gone.
        journal.interaction_ids |= footprint.interaction_ids
        journal.feedback_ids |= footprint.feedback_ids
        journal.machine_ids |= footprint.machine_ids
        journal.vote_ids |= footprint.vote_ids
        journal.save()
        job = _Job(store, footprint, journal, footprint.needles())
        for done, (name, phase) in enumerate(phases, start=1):
            if name not in journal.phases:
                journal.finish(name, phase(job))
            if progress:
                progress(done, len(phases))
        report = DeletionReport(user=user, runs=sorted(journal.runs), versions=sorted(journal.versions),
                                resumed=journal.resumed)
        for counts in journal.phases.values():
            for place, n in counts.items():
                report.removed[place] = report.removed.get(place, 0) + n
        journal.remove()
    return report


class _TrainingLock:
    """The training job's process lock, held so no run writes a dataset meanwhile."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir, self.fd = runs_dir, -1

    def __enter__(self) -> None:
        if not self.runs_dir.is_dir():
            return
        try:
            self.fd = open_locked(self.runs_dir / ".train.lock", blocking=False)
        except BlockingIOError:
            raise DeletionRefused("A training run is in progress; delete the user once it has ended "
                                  "(its dataset may hold their examples).") from None

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


# -- finding them ---------------------------------------------------------------------------
def _rows(path: Path, kind: str) -> list[dict[str, Any]]:
    rows = []
    for raw in path.read_bytes().split(b"\n"):
        row = parse_line(raw, REQUIRED_FIELDS[kind]) if raw.strip() else None
        if row is not None:
            rows.append(row)
    return rows


def _scan(store: LearningStore, user: str, journal: Journal) -> Footprint:
    """Their ids (with those an earlier run found) and texts, read from the locked logs."""
    fp = Footprint(user, set(journal.interaction_ids), set(journal.feedback_ids), set(journal.machine_ids),
                   vote_ids=set(journal.vote_ids))
    interactions = [row for path in store.month_files("interactions") for row in _rows(path, "interactions")]
    feedback = [row for path in store.month_files("feedback") for row in _rows(path, "feedback")]
    for row in interactions:
        if fp.removes_interaction(row) and str(row.get("id")) not in fp.machine_ids:
            fp.add_interaction(row)
    others = {normalize_prompt(str(r.get("prompt") or "")) for r in interactions if not fp.removes_interaction(r)}
    by_id = {str(r.get("id")): r for r in interactions}

    def add(row: dict[str, Any]) -> None:
        linked = by_id.get(str(row.get("interaction_id")))
        if linked is not None:
            mine = linked.get("user") == user or str(linked.get("id")) in fp.interaction_ids
        else:  # stand-alone: the question is theirs unless someone else asked it too
            mine = row.get("user") == user and normalize_prompt(str(row.get("prompt") or "")) not in others
        fp.add_feedback(row, prompt_is_theirs=mine)

    for row in feedback:
        if fp.removes_feedback(row):
            add(row)
    # Machine-made interactions quote texts from both logs, so they are found once both are read;
    # ratings of them (a teacher's reference) then go too.
    for row in interactions:
        if not fp.removes_interaction(row) and fp.quotes_them(row):
            fp.machine_ids.add(str(row.get("id")))
            fp.images.update(image_refs(row))
    for row in feedback:
        if str(row.get("id")) not in fp.feedback_ids and fp.removes_feedback(row):
            add(row)
    for row in interactions:
        if not fp.removes_interaction(row):
            fp.kept_images.update(image_refs(row))
    # Votes last: one goes when it names any interaction found above (theirs or quoting them).
    for row in (row for path in store.month_files("votes") for row in _rows(path, "votes")):
        if fp.removes_vote(row):
            fp.add_vote(row)
    return fp


# -- the places ------------------------------------------------------------------------------
def _records(job: _Job, kind: str, counts: dict[str, int],
             on_row: Callable[[dict[str, Any], bytes], bytes | None]) -> Callable[[bytes], bytes | None]:
    """A line editor for a log of ``kind``: a readable record goes to ``on_row`` (which keeps,
    rewrites or drops it); an unreadable fragment that quotes the user goes too (counted as a
    log fragment); any other fragment stays as it is, for ``doctor`` to judge."""
    def edit(raw: bytes) -> bytes | None:
        row = parse_line(raw, REQUIRED_FIELDS[kind])
        if row is None:
            if job.raw_match(raw):
                counts["log fragments"] += 1
                return None
            return raw
        return on_row(row, raw)
    return edit


def _evals(job: _Job) -> dict[str, int]:
    counts = {"eval items": 0, "log fragments": 0}

    def edit(row: dict[str, Any], raw: bytes) -> bytes | None:
        removed = job.footprint.scrub(row)
        if not removed:
            return raw
        counts["eval items"] += removed
        row.update(redacted=True, redacted_items=int(row.get("redacted_items") or 0) + removed, eval_key=None)
        return dump_record(row)

    with job.store.locked("evals"):
        for path in job.store.month_files("evals"):
            edit_lines(path, _records(job, "evals", counts, edit))
    return counts


def _registries(data_dir: Path) -> list[tuple[str, ModelRegistry]]:
    """The learner's registry and those of other local models (``models-<name>``)."""
    dirs = [data_dir / "models"] + sorted(data_dir.glob("models-*"))
    return [("" if d.name == "models" else f"{d.name}/", ModelRegistry(d)) for d in dirs if d.is_dir()]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _lineage_hit(job: _Job, lineage: Any) -> bool:
    if not isinstance(lineage, dict):
        return False
    fp = job.footprint
    return bool(fp.feedback_ids.intersection(map(str, lineage.get("feedback_ids") or []))
                or fp.vote_ids.intersection(map(str, lineage.get("vote_ids") or []))
                or fp.all_interaction_ids.intersection(map(str, lineage.get("interaction_ids") or [])))


def _runs(job: _Job) -> dict[str, int]:
    counts = {"training examples": 0, "run records": 0}
    runs_dir = job.data_dir / "runs"
    run_dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    cleaned: list[tuple[Path, dict[str, Any], int]] = []
    for run_dir in run_dirs:
        data = _read_json(run_dir / "data.json")
        if not isinstance(data, dict):
            continue
        hit = _lineage_hit(job, data.get("lineage"))
        removed = job.footprint.scrub(data)
        if removed or hit:
            job.journal.runs.add(run_dir.name)
            record = _read_json(run_dir / "run.json")
            if isinstance(record, dict) and record.get("version"):
                job.journal.versions.add(str(record["version"]))
        if removed:
            cleaned.append((run_dir, data, removed))
    for prefix, registry in _registries(job.data_dir):
        for version in registry.versions():
            if version.metadata.get("run_id") in job.journal.runs or _lineage_hit(job, version.metadata.get("lineage")):
                job.journal.versions.add(prefix + version.id)
    job.journal.save()  # before the datasets lose the examples that say which runs these were
    for run_dir, data, removed in cleaned:
        lineage = data.setdefault("lineage", {})
        before = int((lineage.get("redacted") or {}).get("examples_removed", 0))
        lineage["redacted"] = {"examples_removed": before + removed}
        atomic_write_json(run_dir / "data.json", data)
        counts["training examples"] += removed
    for run_dir in run_dirs:
        record = _read_json(run_dir / "run.json")
        if isinstance(record, dict) and (removed := job.footprint.scrub(record)):
            atomic_write_json(run_dir / "run.json", record)
            counts["run records"] += removed
        counts["run records"] += edit_lines(run_dir / "events.jsonl", lambda raw: _scrub_line(job, raw))
    return counts


def _scrub_line(job: _Job, raw: bytes) -> bytes | None:
    """A JSON line without their items; None when the line is theirs or an unreadable fragment of theirs."""
    try:
        row = json.loads(raw)
    except ValueError:
        return None if job.raw_match(raw) else raw
    if isinstance(row, dict) and job.footprint.is_theirs(row):
        return None
    return json.dumps(row, ensure_ascii=False).encode("utf-8") if job.footprint.scrub(row) else raw


def _models(job: _Job) -> dict[str, int]:
    removed = 0
    for _prefix, registry in _registries(job.data_dir):
        for version in registry.versions():
            metadata = dict(version.metadata)
            if version.path is not None and (n := job.footprint.scrub(metadata)):
                atomic_write_json(version.path / "version.json", metadata)
                removed += n
    return {"model version records": removed}


def _json_lines(job: _Job, path: Path, theirs: Callable[[dict[str, Any]], bool]) -> int:
    """Drop the lines of a JSONL cache that are theirs (or unreadable fragments naming them)."""
    def edit(raw: bytes) -> bytes | None:
        try:
            row = json.loads(raw)
        except ValueError:
            return None if job.raw_match(raw) else raw
        return None if isinstance(row, dict) and theirs(row) else raw

    return edit_lines(path, edit)


def _judgments(job: _Job) -> dict[str, int]:
    fp = job.footprint
    ids = fp.all_interaction_ids
    counts = {"judgments": 0, "log fragments": 0}

    def edit(row: dict[str, Any], raw: bytes) -> bytes | None:
        named = (row.get(k) for k in ("interaction_id", "interaction_a", "interaction_b", "judge_interaction_id"))
        if row.get("user") == fp.user or any(i in ids for i in named if i):
            counts["judgments"] += 1
            return None
        return raw

    with job.store.locked("judgments"):
        for path in job.store.month_files("judgments"):
            edit_lines(path, _records(job, "judgments", counts, edit))
    return counts


def _second_opinions(job: _Job) -> dict[str, int]:
    fp = job.footprint

    def theirs(row: dict[str, Any]) -> bool:
        return (str(row.get("interaction_id")) in fp.all_interaction_ids
                or fp.user in (row.get("assignee"), row.get("assigned_by"), row.get("first_rater")))

    path = job.data_dir / SECOND_OPINIONS
    if not path.parent.is_dir():
        return {"second opinions": 0}
    with exclusive_lock(path.parent / ".second_opinions.lock"):  # the lock assignments are written under
        return {"second opinions": _json_lines(job, path, theirs)}


def _teacher(job: _Job) -> dict[str, int]:
    ids = job.footprint.feedback_ids
    return {"teacher rewrites": _json_lines(job, job.data_dir / TEACHER_CACHE, lambda r: str(r.get("feedback_id")) in ids)}


def _replay(job: _Job) -> dict[str, int]:
    prompts = job.footprint.prompts
    return {"replay answers": _json_lines(job, job.data_dir / REPLAY_CACHE,
                                          lambda r: normalize_prompt(str(r.get("prompt") or "")) in prompts)}


def _insights(job: _Job) -> dict[str, int]:
    ids = job.footprint.all_interaction_ids
    counts = {"confidence scores": _json_lines(job, job.data_dir / CONFIDENCE_CACHE,
                                               lambda r: str(r.get("key", "")).split("@")[0] in ids)}
    counts["embeddings"] = 0
    for cache in sorted((job.data_dir / "insights").glob(EMBEDDINGS_CACHE)):
        digests = {text_digest(t) for t in job.footprint.texts}
        fd = open_locked(cache)  # the lock its appenders take
        try:
            data = cache.read_bytes()
            records = [data[i:i + _EMBEDDING_RECORD] for i in range(0, len(data) - _EMBEDDING_RECORD + 1, _EMBEDDING_RECORD)]
            kept = [r for r in records if r[:32] not in digests]
            if len(kept) != len(records):
                atomic_write_bytes(cache, b"".join(kept))
                counts["embeddings"] += len(records) - len(kept)
        finally:
            os.close(fd)
    topics = job.data_dir / TOPICS_CACHE
    counts["topic labels"] = 0
    if topics.is_file() and (job.footprint.texts or job.footprint.interaction_ids):
        topics.unlink()
        counts["topic labels"] = 1
    return counts


def _exports(job: _Job) -> dict[str, int]:
    counts = {"export rows": 0, "export files": 0}
    root = job.data_dir / "exports"
    if not root.is_dir():
        return counts
    fp = job.footprint
    for path in sorted(root.rglob("*.jsonl")):
        counts["export rows"] += _json_lines(job, path, lambda r: fp.is_theirs(r) or fp.scrub(r) > 0)
    for path in sorted(root.rglob("*.parquet")):
        import pyarrow.parquet as pq  # imported when an export exists: most data dirs have none

        rows = pq.read_table(path).to_pylist()
        theirs = sum(1 for r in rows if fp.is_theirs(r) or job.raw_match(json.dumps(r, default=str).encode()))
        if theirs:
            path.unlink()
            counts["export rows"] += theirs
            counts["export files"] += 1
    return counts


def _quarantine(job: _Job) -> dict[str, int]:
    removed = 0
    for kind in KINDS:
        # interactions, feedback and votes are locked for the whole deletion; a second flock would wait on ourselves
        with ExitStack() as stack:
            if kind == "evals":
                stack.enter_context(job.store.locked(kind))
            directory = job.store.kind_dir(kind)
            for path in sorted(directory.glob("*.quarantine.jsonl")) if directory.is_dir() else []:
                removed += edit_lines(path, lambda raw: None if job.raw_match(raw) else raw)
    return {"quarantined lines": removed}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # not ours to judge: leave the file
    return True


def _temp_files(job: _Job) -> dict[str, int]:
    removed = 0
    for path in job.data_dir.rglob(".*.tmp"):
        match = _TEMP_PID.search(path.name)
        if not path.is_file() or match is None or _pid_alive(int(match.group(1))):
            continue  # a live writer's file is renamed into place soon, and cleaned with that place
        if job.raw_match(path.read_bytes()):
            path.unlink(missing_ok=True)
            removed += 1
    return {"temp files": removed}


def _images(job: _Job) -> dict[str, int]:
    removed = 0
    for ref in sorted(job.footprint.images - job.footprint.kept_images):
        try:
            path = image_path(job.data_dir, ref)
        except ImageError:
            continue  # not a reference this workbench wrote: no file of ours
        if path.is_file():
            path.unlink()
            removed += 1
    return {"images": removed}


def _logs(job: _Job) -> dict[str, int]:
    fp = job.footprint
    counts = {"interactions": 0, "machine interactions": 0, "feedback": 0, "votes": 0, "log fragments": 0,
              "snapshots": 0}

    def edit(kind: str) -> Callable[[bytes], bytes | None]:
        def one(row: dict[str, Any], raw: bytes) -> bytes | None:
            if kind == "feedback" and fp.removes_feedback(row):
                counts["feedback"] += 1
                return None
            if kind == "votes" and fp.removes_vote(row):
                counts["votes"] += 1
                return None
            if kind == "interactions" and fp.removes_interaction(row):
                mine = row.get("user") == fp.user or str(row.get("id")) in fp.interaction_ids
                counts["interactions" if mine else "machine interactions"] += 1
                return None
            return raw
        return _records(job, kind, counts, one)

    for kind in ("interactions", "feedback", "votes"):  # all locked by the caller
        for path in job.store.month_files(kind):
            had_snapshot = snapshot_path(path).exists()
            edit_lines(path, edit(kind))  # a rewrite discards the snapshot too
            if had_snapshot and _stale_snapshot(path):
                discard_snapshot(path)  # left by a crash between a rewrite and its snapshot's removal
            counts["snapshots"] += had_snapshot and not snapshot_path(path).exists()
    return counts


def _stale_snapshot(log: Path) -> bool:
    found = load_snapshot(log)
    return found is None or found.inode != os.stat(log).st_ino


__all__ = ["DeletionRefused", "DeletionReport", "delete_user_data"]
