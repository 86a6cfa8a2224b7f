"""Every page through Streamlit's AppTest, on the tiny model in a temporary data dir."""

from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

import dmac_core
from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.store import LearningStore

APP = str(PROJECT_ROOT / "app.py")


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120)


def test_chat_answers_and_rating_lands_in_the_feedback_file(app_env: Config) -> None:
    at = new_app()
    at.run()
    assert not at.exception
    assert "No messages yet" in at.info[0].value
    # the tiny config serves fp32 with the torch loop; the status panel says what runs the learner
    assert any(c.value.startswith("runs on torch (fp32 weights") for c in at.sidebar.caption)
    at.chat_input(key="chat_input").set_value("What is a workbench?").run()
    assert not at.exception, at.exception
    history = at.session_state["chat_history"]
    assert [m["role"] for m in history] == ["user", "assistant"]
    answer = history[-1]
    assert answer["model"] == "deepseek" and answer["model_version"] == "base"
    assert answer["route_reason"] == "auto/priority: deepseek"
    iid = answer["interaction_id"]

    at.feedback(key=f"chat_stars_{iid}").set_value(3).run()  # 0-based: the 4th star
    at.text_input(key=f"chat_note_{iid}").input("Clear, but add an example.").run()
    at.button(key=f"chat_save_{iid}").click().run()
    assert not at.exception
    assert any("Saved: 4/5" in c.value for c in at.caption)

    store = LearningStore(app_env.data_path)
    [feedback] = store.records("feedback")
    assert (feedback["interaction_id"], feedback["rating"], feedback["feedback"], feedback["user"]) == (
        iid, 4, "Clear, but add an example.", "local"
    )
    [interaction] = store.records("interactions")
    assert interaction["id"] == iid and interaction["prompt"] == "What is a workbench?"


def test_empty_chat_input_is_refused(app_env: Config) -> None:
    at = new_app()
    at.run()
    at.chat_input(key="chat_input").set_value("   ").run()
    assert "empty" in at.warning[0].value
    assert LearningStore(app_env.data_path).records("interactions") == []


def seed_ratings(config: Config, n: int = 6) -> None:
    store = LearningStore(config.data_path, fsync=False)
    for i in range(n):
        store.append_feedback(prompt=f"What is fact {i}?", response=f"Fact {i} is blue number {i}.", rating=5)


def test_feedback_page_lists_and_filters(app_env: Config) -> None:
    at = new_app()
    at.run()
    at.switch_page("pages/feedback.py").run()
    assert "No answers logged yet" in at.info[0].value
    seed_ratings(app_env, 3)
    at.run()
    assert not at.exception
    assert at.metric[0].value == "3"
    table = at.dataframe[0].value  # the editable review table
    assert len(table) == 3 and set(table["rating"]) == {5}
    at.multiselect(key="fb_ratings").set_value([1]).run()
    assert at.metric[0].value == "0"
    at.multiselect(key="fb_ratings").set_value([]).run()
    at.selectbox(key="fb_bulk_value").set_value(2).run()
    at.button(key="fb_bulk").click().run()
    assert "Rated 3 answers 2/5" in at.success[0].value
    latest = LearningStore(app_env.data_path).feedback()
    assert sorted(latest["rating"]) == [2, 2, 2, 5, 5, 5]  # the analyst "local" added ratings; others kept


def test_training_page_continues_a_chosen_version(app_env: Config) -> None:
    seed_ratings(app_env)
    jobs = dmac_core.get_learning_system().jobs
    jobs.start()
    assert jobs.wait(180).state == "completed"
    at = new_app()
    at.run()
    at.switch_page("pages/training.py").run()
    picker = at.selectbox(key="train_start_from")
    assert picker.value == "base" and picker.options[:3] == [
        "Base model — a fresh adapter", "Served version (v0001) — continue it", "v0001 (LoRA, sft) — continue it"]
    picker.set_value("v0001").run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.warning
    assert jobs.wait(180).state == "completed"
    at.run()
    versions = [d.value for d in at.dataframe if "served" in d.value.columns][0]
    assert dict(zip(versions["version"], versions["started from"])) == {"v0002": "v0001", "v0001": "base", "base": "-"}
    runs = [d.value for d in at.dataframe if "run_id" in d.value.columns and "replayed" in d.value.columns][0]
    assert list(runs["started from"]) == ["v0001", "base"] and list(runs["version"]) == ["v0002", "v0001"]


def test_train_now_finishes_and_the_run_and_its_chart_appear(app_env: Config) -> None:
    at = new_app()
    at.run()
    at.switch_page("pages/training.py").run()
    at.button(key="train_start").click().run()
    assert "rate at least" in at.warning[0].value.lower() or "only" in at.warning[0].value.lower()

    seed_ratings(app_env)
    at.button(key="train_start").click().run()
    assert not at.exception
    jobs = dmac_core.get_learning_system().jobs
    snapshot = jobs.wait(180)
    assert snapshot.state == "completed", snapshot.message
    at.run()  # run_every fragments do not tick in AppTest: rerun to draw the final state
    assert not at.exception
    progress = at.get("progress")[0]
    assert progress.value == 100 and "completed" in progress.proto.text
    assert at.get("plotly_chart"), "the live loss chart is drawn"
    runs = [d.value for d in at.dataframe if "run_id" in d.value.columns][0]
    assert len(runs) == 1 and runs.iloc[0]["state"] == "completed"
    versions = [d.value for d in at.dataframe if "version" in d.value.columns and "served" in d.value.columns][0]
    assert list(versions["version"]) == ["v0001", "base"] and list(versions["served"]) == [True, False]
    registry = dmac_core.get_learning_system().registry
    at.button(key="train_rollback").click().run()
    assert registry.served_id() == "base"
    at.selectbox(key="train_version_pick").set_value("v0001").run()
    at.button(key="train_promote").click().run()
    assert registry.served_id() == "v0001"

    at.switch_page("pages/metrics.py").run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) >= 2
    loss = json.loads(charts[0].proto.spec)
    assert [t["name"] for t in loss["data"]][:1] == ["train loss"]
    # The run scored the new version and the base on the same items: ROUGE / BLEU per version.
    rouge = json.loads(charts[2].proto.spec)
    assert [bar["x"] for bar in rouge["data"]][0] == ["deepseek@base", "deepseek@v0001"]

    # Side by side on the held-out items, with significance of the differences.
    at.multiselect(key="metrics_compare_models").set_value(["deepseek@base", "deepseek@v0001"]).run()
    at.button(key="metrics_compare").click().run()
    assert not at.exception, at.exception
    summary = at.session_state["metrics_comparison"].summary
    assert list(summary["model"]) == ["deepseek@base", "deepseek@v0001"]
    significance = at.session_state["metrics_comparison"].significance
    assert set(significance["metric"]) >= {"rougeL", "bleu"}


def test_metrics_page_empty_state(app_env: Config) -> None:
    at = new_app()
    at.run()
    at.switch_page("pages/metrics.py").run()
    assert not at.exception
    assert any("No training runs yet" in i.value for i in at.info)
