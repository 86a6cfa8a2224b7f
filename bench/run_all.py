"""Run every benchmark in turn (quick forms unless --full). Each one's output goes to the terminal
and to ``bench/out/<name>.txt``; ``bench/RESULTS.md`` is never changed here (the recorded results
are written deliberately, with a script's ``--write-results`` / ``--append-results``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["store_bench.py", "router_bench.py", "generation_bench.py", "eval_bench.py", "train_bench.py", "load_bench.py",
           "gateway_bench.py"]
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
        out_dir = here / "out"
        out_dir.mkdir(exist_ok=True)
        with open(out_dir / f"{Path(name).stem}.txt", "w", encoding="utf-8") as log:
            process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert process.stdout is not None
            for line in process.stdout:  # to the terminal and the file as it comes
                print(line, end="", flush=True)
                log.write(line)
            failed += process.wait() != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
