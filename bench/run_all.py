"""Run every benchmark in turn (quick forms unless --full); see bench/RESULTS.md for results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["store_bench.py", "router_bench.py", "generation_bench.py", "eval_bench.py", "train_bench.py", "load_bench.py"]
# bench/learning_quality.py (a few minutes a setting) and bench/decoding_quality.py (about half an
# hour) run on their own.


def main() -> int:
    full = "--full" in sys.argv
    here = Path(__file__).resolve().parent
    failed = 0
    for name in BENCHES:
        script = here / name
        if not script.exists():
            continue
        args = [sys.executable, str(script)] + ([] if full else (["--runs", "1", "--seconds", "30"] if name == "load_bench.py" else ["--quick"]))
        print(f"\n=== {name} {' '.join(args[2:])}", flush=True)
        failed += subprocess.call(args) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
