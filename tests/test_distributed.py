"""Distributed training: ``torchrun --nproc_per_node=2`` on CPU (gloo) takes the
same optimizer steps as one process with the same global batch, on the tiny model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.learner.registry import ModelRegistry
from dmac_core.logs.store import LearningStore
from dmac_core.training.dataset import NotEnoughData
from dmac_core.training.distributed import per_device_batch, train_distributed

# 16 distinct rated answers: with global batch 4 every step is a full batch on both ranks.
QA = [(f"Question number {i}: what is item {i} called?", f"Item {i} is called thing-{i * 7}.") for i in range(16)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "GLOO_SOCKET_IFNAME": "lo",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("DMAC_DATA_DIR", None)
    return env


def _step_losses(data_dir: Path, run_id: str) -> list[tuple[int, float]]:
    events = [json.loads(line) for line in (data_dir / "runs" / run_id / "events.jsonl").read_text().splitlines()]
    return [(e["step"], e["train_loss"]) for e in events if e["event"] == "step"]


def _run(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    start = proc.stdout.index("{\n")  # rank 0's JSON summary
    return json.loads(proc.stdout[start : proc.stdout.index("\n}", start) + 2])


def test_torchrun_two_processes_follow_the_single_process_loss_curve(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = make_config(batch_size=4, epochs=2, validation_fraction=0.0, learning_rate=0.05, max_length=64,
                         evaluation_interval=100)
    store = LearningStore(config.data_path, fsync=False)
    for prompt, answer in QA:
        store.append_feedback(prompt=prompt, response=answer, rating=5)
    module = ["-m", "dmac_core.training.distributed", "--config", config.source]

    single = _run([sys.executable, *module])
    double = _run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                   "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *module])

    one = _step_losses(config.data_path, single["run_id"])
    two = _step_losses(config.data_path, double["run_id"])
    assert [s for s, _ in one] == list(range(1, 9))  # 16 items / global batch 4 × 2 epochs
    assert [s for s, _ in two] == [s for s, _ in one]  # same optimizer steps, none logged twice
    diffs = [abs(a - b) for (_, a), (_, b) in zip(one, two)]
    assert max(diffs) < 0.01, list(zip(one, two))  # measured: < 1e-5
    # it trained: the loss moved, so matching curves mean something
    assert one[-1][1] < one[0][1] - 0.05, one

    run = json.loads((config.data_path / "runs" / double["run_id"] / "run.json").read_text())
    assert run["hyper_parameters"]["world_size"] == 2 and run["hyper_parameters"]["per_device_batch_size"] == 2
    assert run["hyper_parameters"]["batch_size"] == 4
    # rank 0 alone registered: one version per run, no stray rank directories in the runs folder
    versions = [v.id for v in ModelRegistry(config.data_path / "models").versions()]
    assert versions == ["v0001", "v0002"] and double["version"] == "v0002"
    assert sorted(p.name for p in (config.data_path / "runs").iterdir() if not p.name.startswith(".")) == sorted(
        [single["run_id"], double["run_id"]]
    )


def test_global_batch_must_divide_and_too_little_data_is_refused(make_config: Callable[..., Config]) -> None:
    assert per_device_batch(8, 2) == 4
    with pytest.raises(ValueError, match="divisible"):
        per_device_batch(5, 2)
    config = make_config()
    with pytest.raises(NotEnoughData):
        train_distributed(config)  # an empty store, single process: nothing is started
    assert not list((config.data_path / "runs").glob("2*"))
