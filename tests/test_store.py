"""LearningStore: round trips, refusals, feedback linking, tolerant and incremental reads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from dmac_core.logs.records import RecordError
from dmac_core.logs.store import LearningStore


def _interaction(store: LearningStore, i: int = 0, **extra):
    fields = {"model": "m", "prompt": f"prompt {i}", "response": f"answer {i}", "user": "ana"}
    fields.update(extra)
    return store.append_interaction(**fields)


def test_round_trip_writes_exact_records_into_utc_month_files(tmp_path: Path) -> None:
    store = LearningStore(tmp_path)
    a = _interaction(store, 1, ts="2026-01-31T23:59:59.999Z", messages=[{"role": "user", "content": "prompt 1"}])
    b = _interaction(store, 2, ts="2026-02-01T00:30:00+01:00")  # 2026-01-31T23:30Z: January in UTC
    c = _interaction(store, 3, ts="2026-02-01T00:00:00Z")
    assert sorted(p.name for p in store.month_files("interactions")) == ["2026-01.jsonl", "2026-02.jsonl"]
    assert store.records("interactions") == [a.to_json_dict(), b.to_json_dict(), c.to_json_dict()]
    lines = (tmp_path / "interactions" / "2026-01.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [a.id, b.id]
    frame = store.interactions()
    assert list(frame["id"]) == [a.id, b.id, c.id]
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["messages"].iloc[0] == [{"role": "user", "content": "prompt 1"}]


@pytest.mark.parametrize("rating", [0, 6, 4.5, "4", True, None])
def test_bad_ratings_are_refused_and_nothing_is_written(tmp_path: Path, rating) -> None:
    store = LearningStore(tmp_path)
    with pytest.raises(RecordError):
        store.append_feedback(prompt="p", response="r", rating=rating)
    assert not (tmp_path / "feedback").exists() or store.month_files("feedback") == []


def test_empty_response_and_unknown_interaction_are_refused(tmp_path: Path) -> None:
    store = LearningStore(tmp_path)
    with pytest.raises(RecordError):
        store.append_feedback(prompt="p", response="   ", rating=3)
    with pytest.raises(RecordError):
        store.append_feedback(interaction_id="nope", rating=3)
    with pytest.raises(RecordError):
        store.append_interaction(model="", prompt="p", response="r")
    assert store.month_files("feedback") == [] and store.month_files("interactions") == []


def test_feedback_links_by_id_and_by_prompt_response_and_supersedes(tmp_path: Path) -> None:
    store = LearningStore(tmp_path)
    old = _interaction(store, 1, ts="2026-01-01T00:00:00Z")
    new = _interaction(store, 1, ts="2026-01-02T00:00:00Z")  # same prompt and answer, newer
    other = _interaction(store, 2)
    by_id = store.append_feedback(interaction_id=other.id, rating=2)
    assert (by_id.prompt, by_id.response) == ("prompt 2", "answer 2")
    by_text = store.append_feedback(prompt="prompt 1", response="answer 1", rating=5)
    assert by_text.interaction_id == new.id != old.id
    loose = store.append_feedback(prompt="never", response="logged", rating=3)
    assert loose.interaction_id is None
    store.append_feedback(interaction_id=other.id, rating=4, feedback="better on second look")
    store.append_feedback(interaction_id=other.id, rating=1, user="bob")
    latest = store.feedback()
    ana_other = latest[(latest["interaction_id"] == other.id) & (latest["user"] == "anonymous")]
    assert list(ana_other["rating"]) == [4]
    assert len(latest) == 4 and len(store.feedback(latest_only=False)) == 5
    assert store.get_interaction(old.id)["ts"] == "2026-01-01T00:00:00.000Z"
    assert store.get_interaction("missing") is None


def test_health_counts_and_tolerant_reads(tmp_path: Path) -> None:
    store = LearningStore(tmp_path)
    good = _interaction(store, 1, ts="2026-03-01T00:00:00Z")
    path = tmp_path / "interactions" / "2026-03.jsonl"
    with open(path, "ab") as handle:
        handle.write(b"not json\n\n{}\n\xff\xfe\x00binary\n[1, 2]\n")
        handle.write(b'{"id":"x","ts":"2026-03-01T00:00:00Z","model":"m","prompt":5,"response":"r"}\n')
        handle.write(b'{"id":"torn","ts":"2026')
    (health,) = store.health()
    assert (health.path, health.records, health.skipped, health.partial_tail) == ("interactions/2026-03.jsonl", 1, 5, True)
    assert health.notice() == "5 unreadable lines skipped in interactions/2026-03.jsonl"
    assert [r["id"] for r in store.records("interactions")] == [good.id]
    assert list(store.interactions()["id"]) == [good.id]
    after = _interaction(store, 2, ts="2026-03-02T00:00:00Z")  # starts on a fresh line after the fragment
    assert [r["id"] for r in store.records("interactions")] == [good.id, after.id]
    (health,) = store.health()
    assert (health.records, health.skipped, health.partial_tail) == (2, 6, False)


def test_reads_are_incremental(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    for i in range(50):
        _interaction(store, i, ts="2026-04-01T00:00:00Z")
    assert len(store.interactions()) == 50
    before = store.parsed_bytes
    path = tmp_path / "interactions" / "2026-04.jsonl"
    size = path.stat().st_size
    assert before == size
    new = _interaction(store, 99, ts="2026-04-02T00:00:00Z")
    frame = store.interactions()
    assert len(frame) == 51 and frame["id"].iloc[-1] == new.id
    assert store.parsed_bytes - before == path.stat().st_size - size  # only the new line was parsed
    assert store.find_interaction_id("prompt 99", "answer 99") == new.id
    # A reader started elsewhere sees the same; a rewrite (new inode) is noticed and re-read.
    rows = store.records("interactions")
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows[:10]))
    assert len(store.interactions()) == 10 and len(store.month_records("interactions", "2026-04")) == 10


def test_month_rollover_with_controlled_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import datetime, timezone

    import dmac_core.logs.records as records

    store = LearningStore(tmp_path, fsync=False)
    clock = iter([datetime(2026, 5, 31, 23, 59, 59, 999000, tzinfo=timezone.utc),
                  datetime(2026, 6, 1, 0, 0, 0, tzinfo=timezone.utc)])
    monkeypatch.setattr(records, "utc_now", lambda: next(clock))
    first, second = _interaction(store, 1), _interaction(store, 2)
    assert (first.ts, second.ts) == ("2026-05-31T23:59:59.999Z", "2026-06-01T00:00:00.000Z")
    assert [p.name for p in store.month_files("interactions")] == ["2026-05.jsonl", "2026-06.jsonl"]
    assert [r["id"] for r in store.month_records("interactions", "2026-06")] == [second.id]


def test_import_lands_in_past_months(tmp_path: Path) -> None:
    from dmac_core.logs.maintenance import import_conversations

    source = tmp_path / "past.csv"
    source.write_text("prompt,response,ts,rating,user\nq1,a1,2025-07-04T10:00:00Z,5,ana\nq2,a2,,,\nq3,a3,2025-08-01T00:00:00Z,9,bob\n")
    store = LearningStore(tmp_path / "data", fsync=False)
    report = import_conversations(store, source)
    assert (report.interactions, report.feedback, len(report.refused)) == (2, 1, 1)
    names = [p.name for p in store.month_files("interactions")]
    assert names[0] == "2025-07.jsonl" and len(names) == 2
    (fb,) = store.records("feedback")
    assert fb["interaction_id"] == store.find_interaction_id("q1", "a1") and fb["ts"].startswith("2025-07-04")


BROKEN_FIXTURES = {
    "truncated_tail": (b'{"id":"t","ts":"2026-07-01T00:00:00Z","model":"m","prompt":"p"', 0, 1),
    "binary_garbage": (bytes(b for b in range(256) if b != 10) * 4 + b"\n", 0, 1),
    "ten_mb_line": (b'{"junk":"' + b"x" * (10 << 20) + b'"}\n', 0, 1),
    "bom_first_line": (None, 1, 0),  # built below: a valid record preceded by a BOM
    "crlf_lines": (None, 2, 0),
    "non_utf8": (b'{"id":"u","ts":"2026-07-01T00:00:00Z","model":"m","prompt":"\xe9t\xe9","response":"r"}\n', 0, 1),
}


@pytest.mark.parametrize("name", sorted(BROKEN_FIXTURES))
def test_broken_file_fixtures_are_read_without_raising(tmp_path: Path, name: str) -> None:
    data, records, skipped = BROKEN_FIXTURES[name]
    record = {"schema": 1, "id": "a", "ts": "2026-07-01T00:00:00.000Z", "model": "m", "prompt": "p", "response": "r"}
    line = json.dumps(record).encode()
    if name == "bom_first_line":
        data = b"\xef\xbb\xbf" + line + b"\n"
    elif name == "crlf_lines":
        data = line + b"\r\n" + line.replace(b'"a"', b'"b"') + b"\r\n"
    directory = tmp_path / "interactions"
    directory.mkdir()
    (directory / "2026-07.jsonl").write_bytes(data)
    store = LearningStore(tmp_path)
    (health,) = store.health()
    assert (health.records, health.skipped) == (records, skipped if name != "truncated_tail" else 0)
    assert health.partial_tail == (name == "truncated_tail")
    assert len(store.records("interactions")) == records == len(store.interactions())
    appended = _interaction(store, 7, ts="2026-07-02T00:00:00Z")  # still readable after any of these
    assert store.records("interactions")[-1]["id"] == appended.id


def test_eight_threads_thousand_records_each(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    pad = "x" * 300

    def writer(t: int) -> None:
        for i in range(1000):
            store.append_interaction(model="m", prompt=f"{t}:{i}", response=pad, ts="2026-08-01T00:00:00Z")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = (tmp_path / "interactions" / "2026-08.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 8001
    parsed = [json.loads(line) for line in lines[:-1]]  # every line a whole record: none interleaved
    assert sorted(r["prompt"] for r in parsed) == sorted(f"{t}:{i}" for t in range(8) for i in range(1000))
    assert store.health()[0].skipped == 0 and len(store.interactions()) == 8000


# -- on-disk snapshots of large logs (logs/snapshot.py) ------------------------------------------
def _frames_equal(a, b) -> None:
    import pandas as pd

    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False)


def test_a_snapshot_lets_the_next_process_skip_parsing_and_stays_exact(tmp_path: Path) -> None:
    writer = LearningStore(tmp_path, fsync=False)
    for i in range(50):
        _interaction(writer, i)
    path = writer.month_files("interactions")[0]
    with open(path, "ab") as handle:
        handle.write(b"not json\n")  # counted as skipped, also after a restart
    first = LearningStore(tmp_path, snapshot_min_bytes=1)
    expected = first.interactions()
    first.wait_for_snapshots()
    snapshot = path.with_name(f".{path.name}.arrow")
    assert snapshot.is_file() and first.parsed_bytes == path.stat().st_size

    second = LearningStore(tmp_path, snapshot_min_bytes=1)
    _frames_equal(second.interactions(), expected)
    assert second.parsed_bytes == 0, "everything came from the snapshot"
    assert [h.skipped for h in second.health()] == [1]
    assert second.records("interactions") == LearningStore(tmp_path, snapshot_min_bytes=0).records("interactions")

    # Appended since the snapshot: only those bytes are parsed, and the frame is the log's.
    size = path.stat().st_size
    for i in range(50, 55):
        _interaction(writer, i)
    third = LearningStore(tmp_path, snapshot_min_bytes=1)
    _frames_equal(third.interactions(), LearningStore(tmp_path, snapshot_min_bytes=0).interactions())
    assert third.parsed_bytes == path.stat().st_size - size
    assert len(third.interactions()) == 55


def test_a_stale_or_broken_snapshot_is_ignored(tmp_path: Path) -> None:
    writer = LearningStore(tmp_path, fsync=False)
    for i in range(20):
        _interaction(writer, i)
    path = writer.month_files("interactions")[0]
    store = LearningStore(tmp_path, snapshot_min_bytes=1)
    store.interactions()
    store.wait_for_snapshots()
    snapshot = path.with_name(f".{path.name}.arrow")

    # The log replaced by another file of the same length (a rewrite): other inode, other rows.
    data = path.read_bytes().replace(b"prompt 1", b"PROMPT 1")
    replacement = tmp_path / "replacement"
    replacement.write_bytes(data)
    kept = snapshot.read_bytes()
    replacement.replace(path)
    snapshot.write_bytes(kept)  # make sure the old snapshot is still there
    fresh = LearningStore(tmp_path, snapshot_min_bytes=0)
    assert "PROMPT 1" in set(fresh.interactions()["prompt"])
    rereader = LearningStore(tmp_path, snapshot_min_bytes=1)
    assert "PROMPT 1" in set(rereader.interactions()["prompt"]) and rereader.parsed_bytes == path.stat().st_size
    rereader.wait_for_snapshots()  # it wrote a snapshot of the new file

    snapshot.write_bytes(b"garbage")
    reader = LearningStore(tmp_path, snapshot_min_bytes=1)
    assert len(reader.interactions()) == 20 and reader.parsed_bytes == path.stat().st_size
