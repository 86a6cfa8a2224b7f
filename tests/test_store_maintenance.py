"""doctor, export, delete-user and the store CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pandas as pd

from dmac_core.cli.logs import cmd_delete_user, cmd_doctor, main
from dmac_core.config import Config
from dmac_core.logs.maintenance import doctor, export, quarantine_path
from dmac_core.logs.store import LearningStore
from dmac_core.privacy.deletion import delete_user_data

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _config(data: Path) -> Config:
    return Config(data_dir=str(data), storage={"fsync": False})


def test_doctor_quarantines_exactly_the_broken_lines(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    good = [store.append_interaction(model="m", prompt=f"p{i}", response="r", ts="2026-01-01T00:00:00Z") for i in range(3)]
    path = store.month_files("interactions")[0]
    raw = path.read_bytes()
    broken = [b"garbage", b'{"id":"half"', b"\xff\xfe\x00"]
    lines = raw.split(b"\n")
    path.write_bytes(lines[0] + b"\n" + broken[0] + b"\n" + lines[1] + b"\r\n" + broken[1] + b"\n\n" + lines[2] + b"\n" + broken[2])
    store.append_feedback(prompt="p0", response="r", rating=5)

    checks = {c.path: c for c in doctor(store)}
    assert (checks["interactions/2026-01.jsonl"].unreadable, checks["interactions/2026-01.jsonl"].records) == (3, 3)
    assert path.read_bytes().count(b"garbage") == 1  # a check alone changes nothing
    seen = []
    checks = {c.path: c for c in doctor(store, fix=True, progress=lambda d, t: seen.append((d, t)))}
    assert checks["interactions/2026-01.jsonl"].quarantined == 3
    assert seen and seen[-1][0] == seen[-1][1]
    assert quarantine_path(path).read_bytes() == b"".join(b + b"\n" for b in broken)
    fresh = LearningStore(tmp_path)
    assert [r["id"] for r in fresh.records("interactions")] == [g.id for g in good]
    assert all(h.skipped == 0 and not h.partial_tail for h in fresh.health())
    assert len(fresh.feedback()) == 1
    assert all(c.quarantined == 0 for c in doctor(fresh, fix=True))  # idempotent


def _rated_store(tmp_path: Path) -> LearningStore:
    store = LearningStore(tmp_path, fsync=False)
    for prompt, answers in {"q1": [("good", 5), ("bad", 1)], "q2": [("fine", 4)], "q3": [("meh", 2)]}.items():
        for answer, rating in answers:
            i = store.append_interaction(model="m", prompt=prompt, response=answer, user="ana" if prompt != "q3" else "bob")
            store.append_feedback(interaction_id=i.id, rating=rating, user="ana" if prompt != "q3" else "bob",
                                  correction="fixed" if answer == "meh" else None)
    store.append_eval(model="m", suite="s", n=1, metrics={"rougeL": 0.5, "nested": {"a": 1}})
    return store


def test_export_parquet_and_trl_jsonl(tmp_path: Path) -> None:
    import datasets

    store = _rated_store(tmp_path / "data")
    written = export(store, tmp_path / "pq", "parquet")
    interactions = pd.read_parquet(written["interactions"])
    assert len(interactions) == 4 and set(interactions["prompt"]) == {"q1", "q2", "q3"}
    assert len(pd.read_parquet(written["feedback"])) == 4 and len(pd.read_parquet(written["evals"])) == 1

    written = export(store, tmp_path / "js", "jsonl")
    sft = datasets.load_dataset("json", data_files=str(written["sft"]), split="train")
    assert sft.column_names == ["prompt", "completion"] and len(sft) == 3  # good, fine, correction
    assert sft[0]["prompt"] == [{"role": "user", "content": "q1"}]
    assert sft[0]["completion"] == [{"role": "assistant", "content": "good"}]
    kto = datasets.load_dataset("json", data_files=str(written["kto"]), split="train")
    assert kto.column_names == ["prompt", "completion", "label"]
    assert sorted(kto["label"]) == [False, False, True, True]
    dpo = datasets.load_dataset("json", data_files=str(written["dpo"]), split="train")
    assert dpo.column_names == ["prompt", "chosen", "rejected"]
    pairs = {(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in dpo}
    assert pairs == {("q1", "good", "bad"), ("q3", "fixed", "meh")}


def test_delete_user_removes_exactly_that_user(tmp_path: Path) -> None:
    store = _rated_store(tmp_path)
    q2 = store.records("interactions")[2]
    store.append_feedback(interaction_id=q2["id"], rating=3, user="bob")  # bob rated ana's answer
    path = store.month_files("interactions")[0]
    with open(path, "ab") as handle:
        handle.write(b'{"id":"frag","user":"ana","prompt":"secret\n')
    removed = delete_user_data(store, "ana").removed
    assert (removed["interactions"], removed["feedback"], removed["log fragments"]) == (3, 4, 1)
    fresh = LearningStore(tmp_path)
    assert {r["user"] for r in fresh.records("interactions")} == {"bob"}
    assert [(r["user"], r["prompt"]) for r in fresh.records("feedback")] == [("bob", "q3")]
    assert b"secret" not in path.read_bytes()
    assert delete_user_data(fresh, "ana").total == 0


def test_cli_handlers_in_process(tmp_path: Path, capsys) -> None:
    store = _rated_store(tmp_path)
    config = _config(tmp_path)
    assert cmd_doctor(Namespace(fix=False, acting_user="local"), config) == 0
    assert "interactions/" in capsys.readouterr().out
    assert cmd_delete_user(Namespace(name="bob", yes=True, acting_user="local"), config) == 0
    out = capsys.readouterr().out
    assert "Deleted 2 items of user 'bob'" in out and "No model version was trained on their data." in out
    assert {r["user"] for r in store.records("interactions")} == {"ana"}
    source = tmp_path / "old.jsonl"
    source.write_text(json.dumps({"prompt": "x", "response": "y", "ts": "2024-12-24T12:00:00Z", "rating": 5}) + "\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"data_dir: {tmp_path}\nstorage:\n  fsync: false\n")
    assert main(["--config", str(config_file), "import", str(source)]) == 0
    assert (tmp_path / "interactions" / "2024-12.jsonl").is_file()
    assert main(["--config", str(config_file), "export", "--format", "jsonl", "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "sft.jsonl").read_text().count("\n") == 3


def test_cli_subprocess_help_and_doctor(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    for command in (["--help"], ["doctor", "--help"], ["import", "--help"], ["export", "--help"], ["delete-user", "--help"]):
        done = subprocess.run([sys.executable, "-m", "dmac_core.cli.logs", *command], capture_output=True, text=True,
                              env=env, cwd=PROJECT_ROOT, timeout=60)
        assert done.returncode == 0 and "usage:" in done.stdout
    store = LearningStore(tmp_path / "data", fsync=False)
    store.append_interaction(model="m", prompt="p", response="r")
    with open(store.month_files("interactions")[0], "ab") as handle:
        handle.write(b"junk\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"data_dir: {tmp_path / 'data'}\n")
    done = subprocess.run([sys.executable, "-m", "dmac_core.cli.logs", "--config", str(config_file), "doctor"],
                          capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=60)
    assert done.returncode == 1 and "1 unreadable line(s)" in done.stdout


def test_delete_user_also_removes_the_snapshot_holding_their_records(tmp_path: Path) -> None:
    store = _rated_store(tmp_path)
    path = store.month_files("interactions")[0]
    reader = LearningStore(tmp_path, snapshot_min_bytes=1)
    reader.interactions()
    reader.wait_for_snapshots()
    snapshot = path.with_name(f".{path.name}.arrow")
    assert b"ana" in snapshot.read_bytes()
    delete_user_data(store, "ana")
    assert not snapshot.exists()
    again = LearningStore(tmp_path, snapshot_min_bytes=1)
    assert set(again.interactions()["user"]) == {"bob"}
    again.wait_for_snapshots()
    assert b"ana" not in snapshot.read_bytes()
