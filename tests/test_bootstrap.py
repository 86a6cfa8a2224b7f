"""scripts/bootstrap.py: the setup's progress lines, and the llama-cpp-python build that
``make run`` starts in the background and ``make test`` waits for. A stand-in ``pip`` in a
scratch venv prints what the real build prints (ninja's ``[n/m]`` lines), so the protocol is
tested in seconds; the real build is what ``make setup`` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dmac_core.learner.llama_cpp_build import read_build_status

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "bootstrap.py"
sys.path.insert(0, str(SCRIPT.parent))
import bootstrap  # noqa: E402


def test_build_progress_is_read_from_ninja_and_make_lines() -> None:
    assert bootstrap.build_fraction(b"[12/48] Building CXX object vendor/llama.cpp/src/llama-model.cpp.o", 0.0) == 0.25
    assert bootstrap.build_fraction(b"[ 45%] Building C object ggml.c.o", 0.1) == 0.45
    assert bootstrap.build_fraction(b"-- Configuring done", 0.3) == 0.3
    assert bootstrap.build_fraction(b"[3/48] Linking", 0.5) == 0.5  # never goes backwards


def test_time_left_comes_from_the_typical_duration_then_from_the_steps_own_pace() -> None:
    assert bootstrap.estimate_left(elapsed=30, fraction=0.0, typical=480) == 450
    assert bootstrap.estimate_left(elapsed=100, fraction=0.5, typical=480) == 100
    assert bootstrap.estimate_left(elapsed=900, fraction=0.05, typical=480) == pytest.approx(17100)  # slower than usual
    assert bootstrap.estimate_left(elapsed=600, fraction=0.0, typical=480) == 48


def _scratch_venv(tmp_path: Path, exit_code: int = 0, wait_for: Path | None = None) -> dict[str, str]:
    """A venv whose pip prints what the build prints; with ``wait_for`` it compiles until that
    file appears (so a test decides when the build ends)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pip = venv / "bin" / "pip"
    pip.write_text(
        "#!/bin/sh\n"
        'echo "Collecting llama-cpp-python==0.3.36"\n'
        'echo "  [1/4] Building C object ggml.c.o"\n'
        + (f'while [ ! -f "{wait_for}" ]; do sleep 0.1; done\n' if wait_for else "")
        + 'echo "  [4/4] Linking CXX shared library libllama.so"\n'
        + ('echo "CMake Error: no compiler"\n' if exit_code else "")
        + f"exit {exit_code}\n"
    )
    pip.chmod(0o755)
    return dict(os.environ, DMAC_VENV=str(venv))


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_build_in_the_foreground_installs_and_records_it(tmp_path: Path) -> None:
    env = _scratch_venv(tmp_path)
    done = _run(env, "llama")
    assert done.returncode == 0, done.stderr
    venv = Path(env["DMAC_VENV"])
    assert (venv / ".llama-cpp-python-0.3.36").exists()
    status = read_build_status(venv / "llama-cpp-build.json")
    assert status is not None and status.state == "done" and status.fraction == 1.0
    assert "[4/4] Linking" in (venv / "logs" / "llama-cpp-build.log").read_text()
    assert "[4/4]" not in done.stdout  # the compiler's lines go to the log, not the terminal
    assert _run(env, "llama").stdout == ""  # built once per venv


def test_a_failed_build_names_its_log_and_the_fix(tmp_path: Path) -> None:
    env = _scratch_venv(tmp_path, exit_code=1)
    failed = _run(env, "llama")
    assert failed.returncode == 1
    assert "CMake Error: no compiler" in failed.stderr and "llama-cpp-build.log" in failed.stderr
    assert "apt-get install build-essential cmake" in failed.stderr and "LLAMA_CPP=off" in failed.stderr
    venv = Path(env["DMAC_VENV"])
    assert not (venv / ".llama-cpp-python-0.3.36").exists()
    status = read_build_status(venv / "llama-cpp-build.json")
    assert status is not None and status.state == "failed"


def test_the_background_build_returns_at_once_and_the_foreground_waits_for_it(tmp_path: Path) -> None:
    finish = tmp_path / "finish-the-build"
    env = _scratch_venv(tmp_path, wait_for=finish)
    venv = Path(env["DMAC_VENV"])
    background = _run(env, "llama", "--background")  # returns while the build goes on
    assert background.returncode == 0 and "in the background" in background.stdout
    status = read_build_status(venv / "llama-cpp-build.json")
    assert status is not None and status.state == "building", status  # written before it returns
    assert not (venv / ".llama-cpp-python-0.3.36").exists()
    assert "already being built" in _run(env, "llama", "--background").stdout
    # what `make test` does while `make run`'s build is going: it follows that build, then uses it
    waiter = subprocess.Popen([sys.executable, str(SCRIPT), "llama"], env=env, stdout=subprocess.PIPE, text=True)
    assert waiter.stdout is not None
    assert "waiting for the background build" in waiter.stdout.readline()
    finish.touch()
    assert waiter.wait(timeout=60) == 0
    assert "built in the background" in waiter.stdout.read()
    assert (venv / ".llama-cpp-python-0.3.36").exists()
    assert json.loads((venv / "llama-cpp-build.json").read_text())["state"] == "done"
