"""How long a newcomer waits: from `make run` in a fresh clone to the first answer on the page.

    .venv/bin/python bench/first_answer.py --cold     # empty pip cache (a new machine)
    .venv/bin/python bench/first_answer.py            # the machine's pip cache as it is

Clones this repository's HEAD into a temporary directory, runs `make run PORT=…` there (its own
venv, data directory and model conversion), and times, from the command's start: each setup step
as it prints it, the page answering its health check, and the first answer in Debian's Chromium
(the Chat page, the question typed and sent as a person would, the answer's rating buttons
shown). It then reads what served the answer from the status panel, stops the workbench and any
llama.cpp build it started, and prints a markdown table. ``--again`` then times a second
`make run` in the same clone (its venv and data kept). The clone is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
QUESTION = "What is the capital of France?"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.read().strip() == b"ok"
    except OSError:
        return False


def _first_answer(url: str) -> tuple[str, str]:
    """Ask the Chat page one question in a real browser; (answer, what the sidebar says ran it)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(600_000)
        page.goto(url)
        box = page.get_by_test_id("stChatInputTextArea")
        box.wait_for()
        box.fill(QUESTION)
        box.press("Enter")
        page.get_by_role("button", name="Save rating").wait_for()
        answer = page.get_by_test_id("stChatMessage").last.inner_text()
        page.get_by_text("Models, usage and caps").click()  # the status panel: what runs each model
        page.get_by_text("runs on").first.wait_for()
        body = page.inner_text("body")
        # what served it: the sidebar's note while llama.cpp is being built, else the status panel's line
        runtime = next((line for line in body.splitlines() if "torch loop while" in line or "runs on" in line), "")
        browser.close()
    return answer.strip(), runtime.strip()


def _stop(process: subprocess.Popen[bytes], clone: Path) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
    status = clone / ".venv" / "llama-cpp-build.json"
    if status.exists():  # the background build runs in its own session
        pid = int(json.loads(status.read_text()).get("pid", 0))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
                time.sleep(2)
            except (ProcessLookupError, PermissionError):
                break


def measure(cold: bool, clone: Path, tmp: Path) -> dict[str, object]:
    """One `make run` in ``clone``, timed to the first answer on the page."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)
    if cold:
        env["PIP_CACHE_DIR"] = str(tmp / "empty-pip-cache")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    process = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            for part in re.split(rb"[\r\n]+", raw):
                text = part.decode(errors="replace").strip()
                if text:
                    lines.append((time.monotonic() - started, text))
                    print(f"{lines[-1][0]:7.1f}s  {text}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"make run exited with {process.returncode}")
            time.sleep(0.5)
        page_s = time.monotonic() - started
        answer, runtime = _first_answer(url)
        answer_s = time.monotonic() - started
    finally:
        _stop(process, clone)
    return {"cold": cold, "page_s": page_s, "answer_s": answer_s, "answer": answer, "runtime": runtime,
            "steps": [(round(t, 1), text) for t, text in lines if re.search(r"done in|ready|Base model|runs on|background", text)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="an empty pip cache, as on a new machine")
    parser.add_argument("--dir", type=Path, help="where the temporary clone goes (default: the system's temp dir)")
    parser.add_argument("--again", action="store_true",
                        help="then stop it and time a second `make run` in the same clone (venv and data kept)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="first-answer-", dir=args.dir))
    clone = tmp / "clone"
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        results = [("fresh clone, " + ("empty" if args.cold else "warm") + " pip cache", measure(args.cold, clone, tmp))]
        if args.again:
            results.append(("again in the same clone", measure(args.cold, clone, tmp)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n`make run`; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for title, result in results:
        print(f"\n### {title}\n\n| step | seconds after `make run` |\n|---|---|")
        for seconds, text in result["steps"]:  # type: ignore[union-attr]
            print(f"| {text} | {seconds} |")
        print(f"| the page answers its health check | {result['page_s']:.0f} |")
        print(f"| **the first answer is on the page** | **{result['answer_s']:.0f}** |")
        print(f"\nanswer: {str(result['answer'])[:200]!r}\nserved by: {result['runtime']!r}")


if __name__ == "__main__":
    main()
