"""Resume after SIGKILL: a training run in a child process is killed at random points (one of
them in the middle of writing a checkpoint), resumed with ``train --resume``, and must end with
exactly the weights of an uninterrupted run with the same seed, and every step's event once.

The default run kills twice (during the second checkpoint's save, then at a random step);
``DMAC_RESUME_ROUNDS=N`` adds N more random kill-and-resume rounds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from dmac_core.config import PROJECT_ROOT, Config, load_config
from dmac_core.training.trainer import latest_checkpoint

from .conftest import tiny_config_dict, write_config
from .test_training import FACTS, adapter_tensors, seed_ratings, services

# The child is the CLI itself; with DMAC_TEST_PAUSE_CHECKPOINT=N it stops for a while inside
# the save of checkpoint-N, after the weights, optimizer and RNG state are written but before
# trainer_state.json (the file that makes a checkpoint complete), so the parent can kill it there.
CHILD = r"""
import os, sys, time
from pathlib import Path
pause_at = int(os.environ.get("DMAC_TEST_PAUSE_CHECKPOINT") or 0)
if pause_at:
    import transformers
    original = transformers.Trainer._save_rng_state
    def paused(self, output_dir):
        original(self, output_dir)
        if self.state.global_step == pause_at:
            Path(output_dir, "PAUSED").touch()
            time.sleep(300)
    transformers.Trainer._save_rng_state = paused
from dmac_core.cli.training import main
sys.exit(main(sys.argv[1:]))
"""

LEARNER = dict(learning_rate=0.05, epochs=4, batch_size=2, validation_fraction=0.0, checkpoint_interval=2,
               evaluation_interval=100)
TOTAL_STEPS = 12  # 6 facts / batch 2 = 3 steps an epoch, 4 epochs


def _config_file(tmp_path: Path, tiny_model_dir: Path, name: str) -> Path:
    data = tiny_config_dict(tmp_path / name, tiny_model_dir, **LEARNER)
    return write_config(tmp_path / f"{name}.yaml", data)


def _spawn(tmp_path: Path, config_file: Path, resume: bool, env: dict[str, str] | None = None) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    args = [sys.executable, str(script), "--config", str(config_file), "train"] + (["--resume"] if resume else [])
    log = open(tmp_path / f"child-{time.monotonic_ns()}.log", "wb")
    return subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})})


def _wait_until(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 120) -> bool:
    """True once ``condition`` holds; False if the child exited first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, "the child made no progress in time"
        time.sleep(0.02)
    return True


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _run_dir(data_dir: Path) -> Path | None:
    runs = [p for p in (data_dir / "runs").glob("*") if (p / "run.json").is_file()]
    return runs[0] if runs else None


def _progress(data_dir: Path) -> tuple[int, int]:
    """(attempts started, highest step logged) from the run's events.jsonl."""
    run = _run_dir(data_dir)
    if run is None or not (run / "events.jsonl").is_file():
        return 0, 0
    starts, step = 0, 0
    for raw in (run / "events.jsonl").read_bytes().splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue  # the line being written
        starts += event.get("event") == "start"
        if event.get("event") == "step":
            step = max(step, int(event["step"]))
    return starts, step


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(tmp_path.glob("child-*.log")))


def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(
    make_config: Callable[..., Config], tmp_path: Path, tiny_model_dir: Path
) -> None:
    seed = int(os.environ.get("DMAC_RESUME_SEED") or random.randrange(10**6))
    rng = random.Random(seed)
    rounds = 1 + int(os.environ.get("DMAC_RESUME_ROUNDS") or 0)
    print(f"DMAC_RESUME_SEED={seed} rounds={rounds}")

    # The uninterrupted reference, in this process (same code, same seed, same data).
    config = make_config(**LEARNER)
    store, registry, jobs = services(config)
    seed_ratings(store)
    jobs.start()
    assert jobs.wait(timeout=300).state == "completed"
    reference = adapter_tensors(registry.get("v0001").path)
    assert jobs.runs()[0]["metrics"]["steps"] == TOTAL_STEPS

    # The same run in child processes, killed and resumed.
    config_file = _config_file(tmp_path, tiny_model_dir, "killed")
    data_dir = tmp_path / "killed"
    store2, registry2, _ = services(load_config(config_file))
    seed_ratings(store2, FACTS)

    # Kill 1: inside the save of checkpoint-4, which is left torn.
    proc = _spawn(tmp_path, config_file, resume=False, env={"DMAC_TEST_PAUSE_CHECKPOINT": "4"})
    marker = lambda: _run_dir(data_dir) is not None and (_run_dir(data_dir) / "checkpoints/checkpoint-4/PAUSED").exists()  # noqa: E731
    assert _wait_until(proc, marker), _logs(tmp_path)
    _kill(proc)
    run_dir = _run_dir(data_dir)
    assert run_dir is not None
    torn = run_dir / "checkpoints" / "checkpoint-4"
    assert torn.is_dir() and not (torn / "trainer_state.json").exists()
    assert latest_checkpoint(run_dir) == run_dir / "checkpoints" / "checkpoint-2"
    assert _progress(data_dir)[1] >= 4  # steps after the checkpoint were logged and must be dropped

    # Kills 2..: at a random step (and a random moment within it), then resume again.
    finished = False
    for attempt in range(2, rounds + 2):
        resume_step = int(latest_checkpoint(run_dir).name.split("-")[-1])
        kill_after = rng.randint(min(resume_step + 1, TOTAL_STEPS - 1), TOTAL_STEPS - 1)
        proc = _spawn(tmp_path, config_file, resume=True)
        # Only this attempt's steps count: wait for its "start" event, then for the kill step.
        def at_kill_point(attempt: int = attempt, kill_after: int = kill_after) -> bool:
            starts, step = _progress(data_dir)
            return starts >= attempt and step >= kill_after

        reached = _wait_until(proc, at_kill_point)
        if not reached:  # the run ended on its own before the kill point
            assert proc.returncode == 0, _logs(tmp_path)
            finished = True
            break
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(proc)
        assert latest_checkpoint(run_dir) is not None

    if not finished:
        proc = _spawn(tmp_path, config_file, resume=True)
        assert proc.wait(timeout=300) == 0, _logs(tmp_path)

    run = json.loads((run_dir / "run.json").read_text())
    assert run["state"] == "completed" and run["version"] == "v0001", run.get("error")
    assert len(run["resumes"]) >= 2 and "checkpoint-4" in run["resumes"][0]["discarded"]
    result = adapter_tensors(registry2.get("v0001").path)
    assert reference.keys() == result.keys()
    assert all(torch.equal(reference[k], result[k]) for k in reference), f"weights differ (seed {seed})"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, TOTAL_STEPS + 1))
    ends = [e for e in events if e["event"] == "end"]
    assert len(ends) == 1 and ends[0]["status"] == "completed" and events[-1]["event"] == "end"
