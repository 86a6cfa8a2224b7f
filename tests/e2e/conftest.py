"""Real-browser fixtures: `streamlit run app.py` on 127.0.0.1 and Debian's Chromium via Playwright.

The app runs on the tiny random model in a temporary data directory, with one sign-in user.
Screenshots go to ``test-artifacts/`` (gitignored) so a failing run can be looked at.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from dmac_core.security.directory import add_user
from dmac_core.config import PROJECT_ROOT
from tests.conftest import tiny_config_dict, write_config

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
E2E_USER, E2E_PASSWORD = "analyst", "e2e-password-123"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"streamlit did not become healthy at {url} within {timeout}s")


def start_app(
    tmp_path: Path, config_data: dict[str, Any], with_user: bool = True, api_port: int | None = None,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Start the workbench with ``config_data``; returns (process, base url, data dir). With
    ``api_port`` it starts as ``make run`` does (``workbench.py``: the pages and the
    OpenAI-compatible API in one process), else the pages alone (``streamlit run app.py``)."""
    data_dir = Path(config_data["data_dir"])
    config = write_config(tmp_path / "config.yaml", config_data)
    secrets = tmp_path / "secrets.toml"
    if with_user:
        add_user(E2E_USER, E2E_PASSWORD, secrets)
    port = free_port()
    env = {
        **os.environ, "DMAC_CONFIG": str(config), "DMAC_SECRETS": str(secrets),
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    log = open(tmp_path / "streamlit.log", "wb")
    if api_port is None:
        command = [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "app.py"), "--server.address",
                   "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
                   "--browser.gatherUsageStats", "false"]
    else:
        command = [sys.executable, str(PROJECT_ROOT / "workbench.py"), "--address", "127.0.0.1", "--port", str(port),
                   "--api-port", str(api_port)]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
    except RuntimeError:
        process.kill()
        raise RuntimeError((tmp_path / "streamlit.log").read_text(errors="replace")[-3000:])
    return process, url, data_dir


@pytest.fixture
def app_server(tmp_path: Path, tiny_model_dir: Path) -> Iterator[tuple[str, Path]]:
    process, url, data_dir = start_app(tmp_path, tiny_config_dict(tmp_path / "data", tiny_model_dir))
    try:
        yield url, data_dir
    finally:
        stop_app(process)


def stop_app(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API runs an event loop in this thread while
    # it is open, and later tests (the seed's asyncio.run examples, the load test) need none.
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is needed for the browser tests: `make test` installs it (apt-get).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs  # type: ignore[attr-defined]
    yield page
    context.close()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
