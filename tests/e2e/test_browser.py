"""The whole loop in a real browser: sign in, chat, rate, train, see the charts.

Chromium (Debian's) drives `streamlit run` on 127.0.0.1 with the tiny model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from dmac_core.logs.store import LearningStore
from tests.e2e.conftest import E2E_PASSWORD, E2E_USER, screenshot

pytestmark = pytest.mark.e2e


def sign_in(page: Any, url: str, password: str = E2E_PASSWORD) -> None:
    page.goto(url)
    page.get_by_role("textbox", name="User name").fill(E2E_USER)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def open_page(page: Any, title: str) -> None:
    """Click the page's link in the sidebar. A click that lands while the app reruns by itself
    (the Training page redraws once when a run ends) can be dropped by Streamlit: click again."""
    for attempt in range(3):
        page.get_by_role("link", name=re.compile(title)).first.click()
        try:
            page.get_by_role("heading", name=re.compile(title)).first.wait_for(timeout=10_000 * (attempt + 1))
            return
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: try the click once more
            if attempt == 2:
                raise


def test_wrong_password_is_refused_and_nothing_else_is_reachable(app_server: tuple[str, Path], page: Any) -> None:
    url, _ = app_server
    sign_in(page, url, password="wrong-password")
    page.get_by_text("Wrong user name or password.").wait_for()
    for path in ("/chat", "/training", "/metrics", "/feedback"):
        page.goto(url + path)
        page.get_by_role("heading", name=re.compile("Sign in")).wait_for()
        assert page.get_by_test_id("stChatInputTextArea").count() == 0
    screenshot(page, "00-sign-in-refused")


def test_chat_rate_train_and_see_metrics(app_server: tuple[str, Path], page: Any) -> None:
    url, data_dir = app_server
    sign_in(page, url)
    page.get_by_role("heading", name=re.compile("Chat")).first.wait_for()

    # Chat: an answer is streamed from the local (tiny) model.
    # The question carries HTML / javascript: payloads: they must show as text and never run.
    question = "What does the workbench do? <img src=x onerror=alert(1)> <script>alert(2)</script> [x](javascript:alert(3))"
    page.get_by_test_id("stChatInputTextArea").fill(question)
    page.get_by_test_id("stChatInputTextArea").press("Enter")
    page.get_by_role("button", name="Save rating").wait_for(timeout=60_000)
    # the rerun that draws the rated answer can show "Save rating" while the streamed copy of the
    # answer from the run before is still on the page; it goes when that rerun ends
    expect(page.get_by_test_id("stChatMessage")).to_have_count(2)
    user_bubble = page.get_by_test_id("stChatMessage").first.inner_text()
    assert "<img src=x onerror=alert(1)>" in user_bubble and "<script>alert(2)</script>" in user_bubble
    page.get_by_role("link", name="x").click(timeout=5_000) if page.get_by_role("link", name="x").count() else None
    screenshot(page, "01-chat")

    # Rate with stars and a note; the record lands in the feedback log under the signed-in user.
    page.get_by_test_id("stFeedbackButton").nth(3).click()  # the 4th star
    page.get_by_label("Feedback (optional)").fill("Good start, add an example.")
    page.get_by_label("Feedback (optional)").press("Enter")
    page.get_by_role("button", name="Save rating").click()
    page.get_by_text("Saved: 4/5").wait_for()
    store = LearningStore(data_dir, fsync=False)
    rows = store.records("feedback")
    assert [(r["rating"], r["feedback"], r["user"]) for r in rows] == [(4, "Good start, add an example.", E2E_USER)]
    screenshot(page, "02-rated")

    # Enough rated material for a run (as if other analysts had rated before).
    for i in range(5):
        store.append_feedback(prompt=f"Question {i}?", response=f"Answer number {i}.", rating=5)

    open_page(page, "Training")
    page.get_by_role("button", name=re.compile("Train now")).click()
    progress = page.get_by_test_id("stProgress")
    progress.wait_for()
    page.get_by_text(re.compile(r"completed — step (\d+)/\1")).wait_for(timeout=120_000)
    screenshot(page, "03-training-done")
    runs = sorted((data_dir / "runs").glob("*/run.json"))
    assert len(runs) == 1 and json.loads(runs[0].read_text())["state"] == "completed"

    open_page(page, "Metrics")
    page.locator(".js-plotly-plot").first.wait_for()
    assert page.locator(".js-plotly-plot").count() >= 2
    page.get_by_text("Evaluations per model version").wait_for()
    screenshot(page, "04-metrics")
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_sign_out_ends_the_session_and_an_idle_session_ends_by_itself(tmp_path: Path, tiny_model_dir: Path,
                                                                       page: Any) -> None:
    from tests.conftest import tiny_config_dict
    from tests.e2e.conftest import start_app, stop_app

    config = tiny_config_dict(tmp_path / "data", tiny_model_dir)
    config["security"] = {"session_idle_minutes": 0.1}  # 6 s without a click ends a session
    process, url, _ = start_app(tmp_path, config)
    try:
        sign_in(page, url)
        open_page(page, "Admin")  # the first user is the admin
        page.get_by_text("Sign-in lockouts").wait_for()
        page.get_by_role("button", name="Sign out").click()
        page.get_by_text("You are signed out.").wait_for()
        page.goto(url + "/training")
        page.get_by_role("heading", name=re.compile("Sign in")).wait_for()
        sign_in(page, url)
        page.get_by_role("heading", name=re.compile("Chat")).first.wait_for()
        page.wait_for_timeout(7_000)
        page.get_by_role("link", name=re.compile("Feedback")).first.click()
        page.get_by_text("without activity").wait_for()
        assert page.get_by_test_id("stChatInputTextArea").count() == 0
        screenshot(page, "09-session-expired")
    finally:
        stop_app(process)


def test_a_blind_vote_in_compare_mode_becomes_a_dpo_pair(tmp_path: Path, tiny_model_dir: Path, page: Any) -> None:
    from dmac_core.config import load_config
    from dmac_core.training.dataset import build_dataset
    from tests.arena_fixtures import register_random_adapter
    from tests.conftest import tiny_config_dict
    from tests.e2e.conftest import start_app, stop_app

    config = tiny_config_dict(tmp_path / "data", tiny_model_dir)
    for seed in (11, 12):  # v0001, then v0002 served: the two contestants
        register_random_adapter(tiny_model_dir, tmp_path / "data" / "models", tmp_path, seed)
    process, url, data_dir = start_app(tmp_path, config)
    try:
        sign_in(page, url)
        page.get_by_role("heading", name=re.compile("Chat")).first.wait_for()
        page.get_by_text("Compare", exact=True).click()
        page.get_by_text("Two at random (blind)").wait_for()
        # the Chat box leaves as the Compare box arrives: type into the one that asks both models
        ask_both = page.get_by_role("textbox", name="Ask both models a question…")
        ask_both.fill("Name a colour.")
        ask_both.press("Enter")
        page.get_by_text("Which answer is better?").wait_for(timeout=60_000)
        main = page.get_by_test_id("stMainBlockContainer")
        blind = main.inner_text()
        assert "v0001" not in blind and "v0002" not in blind and "served" not in blind  # names hidden
        screenshot(page, "10-compare-blind")

        page.get_by_text("B is better", exact=True).click()
        page.get_by_label("Why (optional)").fill("B names a colour.")
        page.get_by_label("Why (optional)").press("Enter")
        page.get_by_role("button", name="Submit vote").click()
        page.get_by_text(re.compile("Vote saved: B is better")).wait_for()
        revealed = main.inner_text()
        assert re.search(r"A was DeepSeek-RL v000[12].*, B was DeepSeek-RL v000[12]", revealed)
        screenshot(page, "11-compare-revealed")
        assert page.dialogs == []  # type: ignore[attr-defined]
    finally:
        stop_app(process)

    store = LearningStore(data_dir, fsync=False)
    [vote] = store.records("votes")
    assert (vote["choice"], vote["note"], vote["user"], vote["prompt"]) == ("b", "B names a colour.", E2E_USER,
                                                                            "Name a colour.")
    assert {vote["version_a"], vote["version_b"]} == {"v0001", "v0002"}
    a, b = store.get_interaction(vote["interaction_a"]), store.get_interaction(vote["interaction_b"])
    assert a is not None and b is not None and a["response"] != b["response"]
    # the next run's dataset: the vote is a DPO pair, B's answer chosen over A's
    learner = load_config(tmp_path / "config.yaml").learner.model_copy(update={"min_examples": 1})
    data = build_dataset(store, learner, method="dpo")
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"], p["record_ids"], p["source"])
            for p in data.dpo + data.dpo_eval] == [(b["response"], a["response"], [vote["id"]], "vote")]
    assert data.lineage["vote_ids"] == [vote["id"]] and data.lineage["counts"]["dpo_from_votes"] == 1
