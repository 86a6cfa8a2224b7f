"""delete-user: every copy of one user's text leaves the data directory, nothing of others does,
and a deletion killed at any point is finished by running it again."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from dmac_core.cli.logs import cmd_delete_user
from dmac_core.config import Config
from dmac_core.fsio import atomic_write_json, open_locked
from dmac_core.insights.embeddings import CACHE_NAME, DIM, text_digest
from dmac_core.logs.maintenance import export
from dmac_core.logs.store import LearningStore
from dmac_core.privacy.deletion import DeletionRefused, delete_user_data
from dmac_core.privacy.journal import journal_path
from dmac_core.serving.attachments import store_image
from dmac_core.training.teacher import rewrite_prompt

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MARK = b"ZQXANA"  # in every text of the user to delete, and in nothing else
PNG = b"\x89PNG\r\n\x1a\n"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lines_without_mark(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.strip() and MARK not in line]


def _build(data: Path) -> dict[str, str]:
    """Three users' logs and every derived place, ana's texts all marked with ``MARK``."""
    store = LearningStore(data, fsync=False)
    only_ana, shared = store_image(data, PNG + b"ana only"), store_image(data, PNG + b"shared")
    bobs = store_image(data, PNG + b"bob only")
    a1 = store.append_interaction(model="m", user="ana", prompt="ZQXANA-P1 what is our launch code for March?",
                                  response="ZQXANA-R1 it is forty two", ts="2026-01-05T10:00:00Z",
                                  images=[only_ana, shared], messages=[{"role": "user", "content": "x",
                                                                        "images": [only_ana]}])
    a2 = store.append_interaction(model="m", user="ana", prompt="ZQXANA-P2 who approved the merger plan?",
                                  response="ZQXANA-R2 the board did", ts="2026-02-05T10:00:00Z")
    b1 = store.append_interaction(model="m", user="bob", prompt="BOB-P1 how tall is the office tower?",
                                  response="BOB-R1 about ninety metres", ts="2026-01-06T10:00:00Z", images=[shared, bobs])
    store.append_interaction(model="m", user="cyd", prompt="CYD-P1 where is the canteen located?",
                             response="CYD-R1 on the ground floor", ts="2026-03-01T10:00:00Z")
    # the workbench's own calls quoting ana's question, and one quoting bob's
    store.append_interaction(model="gemini", user="teacher", purpose="teacher", ts="2026-01-07T10:00:00Z",
                             prompt=rewrite_prompt(a1.prompt, a1.response, "ZQXANA-NOTE1 be more precise"),
                             response="ZQXANA-REWRITE it is 42")
    store.append_interaction(model="gemini", user="teacher", purpose="teacher", ts="2026-01-07T11:00:00Z",
                             prompt=rewrite_prompt(b1.prompt, b1.response, "give the unit"), response="90 m tall")
    ev = store.append_interaction(model="gemini", user="evaluation", purpose="evaluation", prompt=a2.prompt,
                                  response="the board, as far as I know", ts="2026-02-06T10:00:00Z")
    store.append_interaction(model="gemini", user="evaluation", purpose="evaluation", prompt=b1.prompt,
                             response="ninety metres", ts="2026-01-08T10:00:00Z")
    fa1 = store.append_feedback(interaction_id=a1.id, rating=2, user="ana", feedback="ZQXANA-NOTE1 be more precise",
                                correction="ZQXANA-FIX1 it is 42", ts="2026-01-05T11:00:00Z")
    store.append_feedback(interaction_id=b1.id, rating=4, user="ana", feedback="ZQXANA-NOTE2 nice one bob",
                          ts="2026-01-06T11:00:00Z")
    store.append_feedback(interaction_id=a2.id, rating=5, user="bob", ts="2026-02-05T11:00:00Z")  # bob on ana's
    store.append_feedback(interaction_id=ev.id, rating=5, user="teacher:gemini", ts="2026-02-06T11:00:00Z")
    fb1 = store.append_feedback(interaction_id=b1.id, rating=5, user="bob", ts="2026-01-06T12:00:00Z")
    store.append_feedback(prompt="CYD-P1 where is the canteen located?", response="CYD-R1 on the ground floor",
                          rating=3, user="cyd", ts="2026-03-01T11:00:00Z")
    ana_item = {"prompt": a1.prompt, "reference": "ZQXANA-FIX1 it is 42", "output": "no idea"}
    bob_item = {"prompt": b1.prompt, "reference": b1.response, "output": "ninety"}
    store.append_eval(model="m", suite="rated", n=2, metrics={"rougeL": 0.4}, per_item=[ana_item, bob_item],
                      eval_key="k1", ts="2026-01-09T10:00:00Z")
    store.append_eval(model="m", suite="rated", n=1, metrics={"rougeL": 0.9}, per_item=[bob_item],
                      ts="2026-01-10T10:00:00Z")
    # a torn fragment in a log and a quarantined one, of ana and of bob
    with open(store.month_files("interactions")[0], "ab") as handle:
        handle.write(b'{"id":"torn","user":"ana","prompt":"ZQXANA-P9 half a line\n')
    quarantine = data / "interactions" / "2026-02.jsonl.quarantine.jsonl"
    quarantine.write_bytes(b'{"user":"ana","prompt":"ZQXANA-P8 broken\n{"user":"bob","prompt":"BOB-P8 broken\n')
    # two runs: r1 trained on ana's answer and registered v0001, r2 (bob only) registered v0002
    def example(prompt: str, answer: str, ids: list[str]) -> dict:
        return {"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": answer}],
                "record_ids": ids, "weight": 1.0}
    gate_items = {"checks": [{"check": "rated", "items": [{"prompt": a1.prompt, "before": "?", "after": "42"},
                                                          {"prompt": b1.prompt, "before": "?", "after": "90"}]}]}
    for run, examples, version in (("r1", [example(a1.prompt, "ZQXANA-FIX1 it is 42", [fa1.id]),
                                           example(b1.prompt, b1.response, [fb1.id])], "v0001"),
                                   ("r2", [example(b1.prompt, b1.response, [fb1.id])], "v0002")):
        (data / "runs" / run).mkdir(parents=True)
        (data / "models" / version).mkdir(parents=True)
        atomic_write_json(data / "runs" / run / "data.json", {"sft_train": examples, "lineage": {
            "feedback_ids": sorted(i for e in examples for i in e["record_ids"])}})
        atomic_write_json(data / "runs" / run / "run.json", {"run_id": run, "version": version,
                                                             "gate": gate_items if run == "r1" else {}})
        (data / "runs" / run / "events.jsonl").write_text('{"event": "step", "loss": 1.0}\n')
        atomic_write_json(data / "models" / version / "version.json", {"id": version, "run_id": run,
                                                                      "gate": gate_items if run == "r1" else {}})
    # caches
    (data / "teacher").mkdir()
    (data / "teacher" / "rewrites.jsonl").write_text(
        json.dumps({"feedback_id": fa1.id, "rewrite": "ZQXANA-REWRITE it is 42"}) + "\n"
        + json.dumps({"feedback_id": fb1.id, "rewrite": "about 90 metres"}) + "\n")
    (data / "replay").mkdir()
    (data / "replay" / "answers.jsonl").write_text(
        json.dumps({"key": "1", "prompt": a2.prompt, "answer": "ZQXANA-R3 nobody"}) + "\n"
        + json.dumps({"key": "2", "prompt": "Who wrote Hamlet?", "answer": "Shakespeare"}) + "\n")
    (data / "insights").mkdir()
    (data / "insights" / "confidence.jsonl").write_text(
        json.dumps({"key": f"{a1.id}@base:abc", "tokens": [["ZQXANA-TOK", 0.5, 0.1]]}) + "\n"
        + json.dumps({"key": f"{b1.id}@base:abc", "tokens": [["ninety", 0.5, 0.1]]}) + "\n")
    (data / "insights" / "topics.json").write_text(json.dumps({"keywords": {"0": ["zqxana", "launch"]}}))
    vector = np.ones(DIM, np.float32).tobytes()
    (data / "insights" / CACHE_NAME).write_bytes(text_digest(a1.prompt) + vector + text_digest(b1.prompt) + vector)
    export(store, data / "exports", "jsonl", min_rating=1)
    # a temp file of a writer that died mid-write (its pid is gone)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (data / "runs" / "r1" / f".data.json.{dead.pid}.1.tmp").write_bytes(b'{"prompt": "ZQXANA-P1 what is our launch')
    # a snapshot of the interaction log, which holds ana's rows
    reader = LearningStore(data, snapshot_min_bytes=1)
    reader.interactions()
    reader.wait_for_snapshots()
    assert MARK in (data / "interactions" / ".2026-01.jsonl.arrow").read_bytes()
    return {"only_ana": only_ana, "shared": shared, "bobs": bobs}


def _assert_gone_and_others_kept(data: Path, before: dict[str, bytes], refs: dict[str, str]) -> None:
    after = _files(data)
    leaks = [name for name, content in after.items() if MARK in content or MARK.lower() in content]
    assert leaks == []
    assert not any(name.startswith("privacy/") for name in after)  # the journal is gone once done
    for name in ("interactions/2026-01.jsonl", "interactions/2026-02.jsonl", "feedback/2026-01.jsonl",
                 "feedback/2026-02.jsonl", "evals/2026-01.jsonl", "teacher/rewrites.jsonl", "replay/answers.jsonl",
                 "insights/confidence.jsonl", "interactions/2026-02.jsonl.quarantine.jsonl"):
        if name == "evals/2026-01.jsonl":  # the first record is redacted, the second untouched
            assert after[name].split(b"\n")[1] == before[name].split(b"\n")[1]
            continue
        # every line of hers (and every line quoting her) carries the mark: the others stay as they were
        kept = _lines_without_mark(before[name])
        assert [line for line in after.get(name, b"").split(b"\n") if line.strip()] == kept, name
    for name in ("interactions/2026-03.jsonl", "feedback/2026-03.jsonl", "runs/r2/data.json", "runs/r2/run.json",
                 "models/v0002/version.json", f"images/{refs['shared']}", f"images/{refs['bobs']}"):
        assert after[name] == before[name], name  # untouched, byte for byte
    assert f"images/{refs['only_ana']}" not in after
    store = LearningStore(data)
    assert sorted(store.interactions()["user"]) == ["bob", "cyd", "evaluation", "teacher"]
    assert sorted(zip(store.feedback(latest_only=False)["user"], store.feedback(latest_only=False)["rating"])) == [
        ("bob", 5), ("cyd", 3)]


def test_delete_user_removes_every_copy_and_keeps_everyone_else(tmp_path: Path) -> None:
    data = tmp_path / "data"
    refs = _build(data)
    before = _files(data)
    seen: list[tuple[int, int]] = []
    report = delete_user_data(LearningStore(data, fsync=False), "ana", progress=lambda d, t: seen.append((d, t)))
    _assert_gone_and_others_kept(data, before, refs)
    assert seen[-1][0] == seen[-1][1]
    assert (report.runs, report.versions, report.resumed) == (["r1"], ["v0001"], False)
    removed = report.removed
    assert (removed["interactions"], removed["machine interactions"], removed["feedback"]) == (2, 2, 4)
    assert (removed["log fragments"], removed["quarantined lines"], removed["images"]) == (1, 1, 1)
    assert (removed["eval items"], removed["training examples"], removed["teacher rewrites"]) == (1, 1, 1)
    assert (removed["replay answers"], removed["confidence scores"], removed["embeddings"]) == (1, 1, 1)
    assert (removed["topic labels"], removed["temp files"], removed["snapshots"]) == (1, 1, 2)
    assert removed["run records"] == 1 and removed["model version records"] == 1 and removed["export rows"] >= 1
    redacted = json.loads((data / "evals" / "2026-01.jsonl").read_bytes().split(b"\n")[0])
    assert (redacted["n"], redacted["redacted"], redacted["redacted_items"], redacted["eval_key"]) == (2, True, 1, None)
    assert [i["prompt"] for i in redacted["per_item"]] == ["BOB-P1 how tall is the office tower?"]
    lineage = json.loads((data / "runs" / "r1" / "data.json").read_text())["lineage"]
    assert lineage["redacted"] == {"examples_removed": 1}
    embeddings = (data / "insights" / CACHE_NAME).read_bytes()
    assert len(embeddings) == 32 + DIM * 4 and embeddings.startswith(text_digest("BOB-P1 how tall is the office tower?"))
    done = _files(data)
    again = delete_user_data(LearningStore(data, fsync=False), "ana")  # nothing left, nothing else touched
    assert again.total == 0 and _files(data) == done


def test_the_journal_keeps_ids_not_text_and_a_rerun_finds_feedback_on_deleted_interactions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _build(data)
    store = LearningStore(data, fsync=False)
    a2 = next(r for r in store.records("interactions") if r["prompt"].startswith("ZQXANA-P2"))
    # a crash once ana's interactions were rewritten, before the feedback was: the journal says
    # every phase but the logs ran, and her interaction a2 is already gone from the log
    from dmac_core.privacy import deletion

    real_logs = deletion._logs
    crashed: list[bool] = []

    def logs_then_crash(job):  # noqa: ANN001 - the private job object
        path = job.store.month_files("interactions")[1]
        deletion.edit_lines(path, lambda raw: None if b'"user":"ana"' in raw else raw)
        crashed.append(True)
        raise KeyboardInterrupt  # stands in for the kill: the journal must already hold the ids

    deletion._logs = logs_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            delete_user_data(store, "ana")
    finally:
        deletion._logs = real_logs
    journal = journal_path(data, "ana").read_bytes()
    assert a2["id"].encode() in journal and MARK not in journal and b"ana" not in journal
    assert store.get_interaction(a2["id"]) is None
    report = delete_user_data(LearningStore(data, fsync=False), "ana")
    assert report.resumed and crashed
    assert all(r["interaction_id"] != a2["id"] for r in LearningStore(data).records("feedback"))  # bob's went


def test_cli_prints_counts_and_the_versions_to_retire(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    _build(data)
    assert cmd_delete_user(Namespace(name="ana", yes=True, acting_user="local"), Config(data_dir=str(data), storage={"fsync": False})) == 0
    out = capsys.readouterr().out
    assert "Deleted " in out and "eval items" in out and "training examples" in out and "images" in out
    assert "v0001" in out and "v0002" not in out


def test_a_training_run_in_progress_refuses_the_deletion(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _build(data)
    before = _files(data)
    fd = open_locked(data / "runs" / ".train.lock")
    try:
        with pytest.raises(DeletionRefused):
            delete_user_data(LearningStore(data, fsync=False), "ana")
    finally:
        os.close(fd)
    after = _files(data)
    assert {k: v for k, v in after.items() if k != "runs/.train.lock"} == before


# -- killed at any point, then run again ---------------------------------------------------------
# Runs the deletion in a child process that exits, as a kill would (no cleanup, no flush), just
# before its Nth file operation that makes a change durable: a rename into place or a removal.
_CHILD = """
import os, sys
from dmac_core.logs.store import LearningStore
from dmac_core.privacy.deletion import delete_user_data
limit, count = int(sys.argv[2]), [0]
def crashing(real):
    def op(*args, **kwargs):
        count[0] += 1
        if count[0] == limit:
            os._exit(9)
        return real(*args, **kwargs)
    return op
os.replace, os.rename, os.unlink = crashing(os.replace), crashing(os.rename), crashing(os.unlink)
delete_user_data(LearningStore(sys.argv[1], fsync=False), "ana")
print("ops", count[0])
"""


def _child(data: Path, limit: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-c", _CHILD, str(data), str(limit)], capture_output=True, text=True,
                          env=env, cwd=PROJECT_ROOT, timeout=60)


def test_killed_at_any_file_operation_a_rerun_finishes(tmp_path: Path) -> None:
    template = tmp_path / "template"
    refs = _build(template)
    whole = _child(shutil.copytree(template, tmp_path / "whole", symlinks=True), 10**9)
    assert whole.returncode == 0, whole.stderr
    total = int(whole.stdout.split()[-1])
    assert total > 10
    rng = random.Random(20260517)
    points = sorted({1, 2, 3, total // 2, total - 1, total} | set(rng.sample(range(4, total - 1), 3)))
    for n in points:
        data = shutil.copytree(template, tmp_path / f"kill-{n}", symlinks=True)
        before = _files(data)
        crashed = _child(data, n)
        assert crashed.returncode == 9, (n, crashed.stderr)
        if rng.random() < 0.5:  # killed twice now and then: the re-run resumes a resumed deletion
            assert _child(data, rng.randint(1, 6)).returncode in (0, 9)
        report = delete_user_data(LearningStore(data, fsync=False), "ana")
        assert report.versions == ["v0001"], n
        _assert_gone_and_others_kept(data, before, refs)


def test_sigkill_of_the_cli_at_random_moments_then_rerun(tmp_path: Path) -> None:
    template = tmp_path / "template"
    refs = _build(template)
    config = tmp_path / "config.yaml"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    rng = random.Random(7)
    for attempt in range(1):
        data = shutil.copytree(template, tmp_path / f"sigkill-{attempt}", symlinks=True)
        before = _files(data)
        config.write_text(f"data_dir: {data}\nstorage:\n  fsync: false\n")
        command = [sys.executable, "-m", "dmac_core.cli.logs", "--config", str(config), "delete-user", "ana", "--yes"]
        child = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 2.0))  # start-up is most of it: the kill lands before or during the work
        child.send_signal(signal.SIGKILL)
        child.wait()
        done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        _assert_gone_and_others_kept(data, before, refs)


def test_journal_name_is_a_hash_of_the_user(tmp_path: Path) -> None:
    assert journal_path(tmp_path, "ana").name == f"delete-{hashlib.sha256(b'ana').hexdigest()[:16]}.json"


def test_votes_by_them_and_on_their_answers_go_with_the_examples_made_from_them(tmp_path: Path) -> None:
    from dmac_core.config import LocalModelConfig
    from dmac_core.training.dataset import build_dataset

    data = tmp_path / "data"
    store = LearningStore(data, fsync=False)

    def pair(user: str, prompt: str, a: str, b: str) -> tuple[str, str]:
        return (store.append_interaction(model="deepseek", model_version="v0001", user=user, prompt=prompt, response=a).id,
                store.append_interaction(model="gemini", user=user, prompt=prompt, response=b).id)

    def vote(user: str, ids: tuple[str, str], choice: str, note: str = "") -> str:
        return store.append_vote(user=user, prompt="-", interaction_a=ids[0], interaction_b=ids[1], model_a="deepseek",
                                 model_b="gemini", choice=choice, note=note).id

    anas = pair("ana", "ZQXANA-P1 what is our launch code?", "ZQXANA-R1 forty two", "ZQXANA-R2 nobody knows")
    bobs = pair("bob", "BOB-P1 how tall is the tower?", "BOB-R1 ninety metres", "BOB-R2 very tall")
    cyds = pair("cyd", "CYD-P1 where is the canteen?", "CYD-R1 ground floor", "CYD-R2 somewhere")
    bob_on_ana = vote("bob", anas, "a", note="BOB-NOTE first one")
    ana_on_bob = vote("ana", bobs, "a", note="ZQXANA-NOTE bob's first is right")
    ana_both_bad = vote("ana", cyds, "both_bad")
    cyd_on_cyd = vote("cyd", cyds, "a")
    dataset = build_dataset(store, LocalModelConfig(validation_fraction=0.0, min_examples=1), method="dpo")
    assert dataset.lineage["vote_ids"] == sorted([bob_on_ana, ana_on_bob, ana_both_bad, cyd_on_cyd])
    for run, version, lineage in (("r1", "v0001", dataset.lineage), ("r2", "v0002", {"vote_ids": [cyd_on_cyd]})):
        (data / "runs" / run).mkdir(parents=True)
        (data / "models" / version).mkdir(parents=True)
        atomic_write_json(data / "runs" / run / "data.json", {"dpo": dataset.dpo if run == "r1" else [],
                                                             "kto": dataset.kto if run == "r1" else [],
                                                             "lineage": lineage})
        atomic_write_json(data / "runs" / run / "run.json", {"run_id": run, "version": version})
        atomic_write_json(data / "models" / version / "version.json", {"id": version, "lineage": lineage})
    assert MARK in (data / "runs" / "r1" / "data.json").read_bytes()

    report = delete_user_data(LearningStore(data, fsync=False), "ana")
    leaks = [name for name, content in _files(data).items() if MARK in content or MARK.lower() in content]
    assert leaks == []
    assert (report.removed["votes"], report.removed["interactions"]) == (3, 2)
    assert (report.runs, report.versions) == (["r1"], ["v0001"])
    after = LearningStore(data)
    assert [v["id"] for v in after.records("votes")] == [cyd_on_cyd]
    kept = json.loads((data / "runs" / "r1" / "data.json").read_text())
    # bob's vote on her pair, her vote on bob's pair and her "both bad" on cyd's: their examples go
    assert [(p["chosen"][0]["content"], p["record_ids"]) for p in kept["dpo"]] == [("CYD-R1 ground floor", [cyd_on_cyd])]
    assert kept["kto"] == [] and kept["lineage"]["redacted"] == {"examples_removed": 4}
    # the next dataset is built from what is left: cyd's vote alone
    again = build_dataset(after, LocalModelConfig(validation_fraction=0.0, min_examples=1), method="dpo")
    assert again.lineage["vote_ids"] == [cyd_on_cyd] and len(again.dpo) == 1
