"""Torture: 4 writer processes (2 threads each) appending 100 B..256 KB records, killed with
SIGKILL at random moments, round after round. Every acknowledged record must survive and
parse; unreadable lines may only be fragments of unacknowledged records; reads never raise.

Short form in the default run; ``DMAC_TORTURE_ROUNDS=50`` (or more) for the long form.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from dmac_core.logs.maintenance import doctor
from dmac_core.logs.parsing import parse_line
from dmac_core.logs.store import REQUIRED_FIELDS, LearningStore

ROUNDS = int(os.environ.get("DMAC_TORTURE_ROUNDS", "5"))
PROJECT_ROOT = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent(
    """
    import os, random, sys, threading, time
    from dmac_core.logs.store import LearningStore
    data_dir, ack_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = LearningStore(data_dir, fsync=True)
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    def run(t):
        rnd = random.Random(seed * 100 + t)
        while True:
            size = int(10 ** rnd.uniform(2, 5.41))  # 100 B .. 256 KB, log-uniform
            month = rnd.choice(["2026-01-15T00:00:00Z", "2026-02-15T00:00:00Z"])
            record = store.append_interaction(model="m", prompt=f"w{seed}t{t}", response="x" * size, ts=month)
            os.write(ack, (record.id + "\\n").encode())  # acknowledged only after append returned
            time.sleep(rnd.uniform(0.0, 0.03))  # bounds the data volume; kills still land mid-write
    for t in range(2):
        threading.Thread(target=run, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def _acked(ack_dir: Path) -> set[str]:
    ids: set[str] = set()
    for path in ack_dir.glob("*.ack"):
        # The ack write itself may be torn by the kill: count whole lines only.
        ids.update(m for m in re.findall(rb"^([0-9a-f]{32})\n", path.read_bytes(), flags=re.M))
    return {i.decode() for i in ids}


def _round(data_dir: Path, ack_dir: Path, rnd: random.Random, number: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    procs = []
    for w in range(4):
        ack = ack_dir / f"r{number}w{w}.ack"
        procs.append((subprocess.Popen([sys.executable, "-c", WRITER, str(data_dir), str(ack), str(number * 10 + w)],
                                       env=env, cwd=PROJECT_ROOT), ack))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(a.exists() and a.stat().st_size > 0 for _p, a in procs):
        time.sleep(0.02)
    reader = LearningStore(data_dir, fsync=True)
    rnd.shuffle(procs)
    for proc, _ack in procs:
        time.sleep(rnd.uniform(0.0, 0.25))
        reader.health()  # reads while writers run (and die) must never raise
        reader.interactions()
        proc.send_signal(signal.SIGKILL)
    for proc, _ack in procs:
        proc.wait(timeout=10)


def test_kill_9_torture(tmp_path: Path) -> None:
    data_dir, ack_dir = tmp_path / "data", tmp_path / "acks"
    ack_dir.mkdir()
    rnd = random.Random(1234)
    for number in range(ROUNDS):
        _round(data_dir, ack_dir, rnd, number)
    acked = _acked(ack_dir)
    assert len(acked) >= ROUNDS * 4  # every writer acknowledged something in every round

    store = LearningStore(data_dir)
    present = [r["id"] for r in store.records("interactions")]
    assert len(present) == len(set(present))
    missing = acked - set(present)
    assert not missing, f"{len(missing)} acknowledged records lost"
    assert set(store.interactions()["id"]) == set(present)

    # Unreadable lines are only fragments of records that were never acknowledged.
    fragments = 0
    for path in store.month_files("interactions"):
        for raw in path.read_bytes().split(b"\n"):
            if raw.strip() and parse_line(raw, REQUIRED_FIELDS["interactions"]) is None:
                fragments += 1
                ids = {m.decode() for m in re.findall(rb'"id":"([0-9a-f]{32})"', raw)}
                assert not ids & acked
    assert fragments == sum(h.skipped for h in store.health()) + sum(h.partial_tail for h in store.health())

    # doctor --fix quarantines exactly those fragments and keeps every record.
    checks = doctor(store, fix=True)
    assert sum(c.quarantined for c in checks) == fragments
    fresh = LearningStore(data_dir)
    assert [r["id"] for r in fresh.records("interactions")] == present
    assert all(h.skipped == 0 and not h.partial_tail for h in fresh.health())
