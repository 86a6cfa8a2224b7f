"""The served app's Streamlit settings that the browser load depends on."""

from __future__ import annotations

import tomllib

from dmac_core.config import PROJECT_ROOT


def test_no_forced_garbage_collection_after_each_rerun() -> None:
    # A forced full collection after every script run held the GIL ~0.1 s per rerun, so ten
    # sessions' star clicks queued behind each other (bench/RESULTS.md, "Browser load").
    settings = tomllib.loads((PROJECT_ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    assert settings["runner"]["postScriptGC"] is False
