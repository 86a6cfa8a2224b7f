"""Load: concurrent browser sessions chat and rate against an instant fake backend.
No feedback may be lost (records in the log == clicks) and no page may show an error.

The default run is short (10 sessions, 30 s); DMAC_LOAD_SECONDS=120 gives the full two
minutes (bench/load_bench.py records p50/p95 in bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from dmac_core.logs.store import LearningStore
from tests.e2e.conftest import start_app, stop_app
from tests.e2e.load_driver import run_load
from tests.fake_servers import FakeServer

pytestmark = pytest.mark.e2e


def load_config_dict(data_dir: Path, fake: FakeServer) -> dict:
    return {
        "data_dir": str(data_dir),
        "models": {
            "deepseek": {"kind": "local", "enabled": False},
            "fast": {"kind": "openai_compat", "display_name": "Instant", "base_url": fake.openai_base_url,
                     "api_key_env": None, "model": "instant", "timeout_s": 10, "max_retries": 0},
        },
        "routing": {"order": ["fast"]},
    }


def test_ten_sessions_chat_and_rate_without_losing_feedback(tmp_path: Path) -> None:
    seconds = float(os.environ.get("DMAC_LOAD_SECONDS", "30"))
    with FakeServer("openai", default_text="An instant answer.") as fake:
        process, url, data_dir = start_app(tmp_path, load_config_dict(tmp_path / "data", fake), with_user=False)
        try:
            result = asyncio.run(run_load(url, sessions=10, seconds=seconds))
        finally:
            stop_app(process)
    summary = result.summary()
    print("LOAD", summary)
    assert result.errors == []
    assert result.clicks >= 10, summary
    feedback = LearningStore(data_dir).records("feedback")
    assert len(feedback) == result.clicks  # every click became exactly one record
    assert len({f["interaction_id"] for f in feedback}) == result.clicks
