"""Every page through Streamlit's AppTest, on the tiny model in a temporary data dir."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

import dmac_core
from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.logs.store import LearningStore
from tests.gate_doubles import scripted_gate

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
    # answers an evaluation asked for are logged too, but shown only when asked for
    LearningStore(app_env.data_path).append_interaction(model="deepseek", prompt="Test item 1?", response="An answer.",
                                                        purpose="evaluation", user="evaluation")
    at.run()
    assert at.metric[0].value == "3"
    at.multiselect(key="fb_purposes").set_value(["evaluation"]).run()
    assert at.metric[0].value == "1" and list(at.dataframe[0].value["purpose"]) == ["evaluation"]
    at.multiselect(key="fb_purposes").set_value(["chat"]).run()
    at.selectbox(key="fb_bulk_value").set_value(2).run()
    at.button(key="fb_bulk").click().run()
    assert any("Rate all 3 shown answers 2/5" in w.value for w in at.warning)  # asked first
    assert sorted(LearningStore(app_env.data_path).feedback()["rating"]) == [5, 5, 5]  # nothing written yet
    at.button(key="fb_bulk_confirm").click().run()
    assert "Rated 3 answers 2/5" in at.success[0].value
    latest = LearningStore(app_env.data_path).feedback()
    assert sorted(latest["rating"]) == [2, 2, 2, 5, 5, 5]  # the analyst "local" added ratings; others kept


def test_training_page_continues_a_chosen_version(app_env: Config) -> None:
    seed_ratings(app_env)
    system = dmac_core.get_learning_system()
    jobs = system.jobs
    jobs.gate = scripted_gate(app_env, system.registry)  # the tiny model learns no visible answer
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

    # v0002 passed the gate too and is served; roll back in one click, serve a version by hand
    assert system.registry.served_id() == "v0002"
    at.button(key="train_rollback").click().run()
    assert system.registry.served_id() == "v0001"
    at.selectbox(key="train_version_pick").set_value("v0002").run()
    at.button(key="train_promote").click().run()
    assert system.registry.served_id() == "v0002"
    events = [(e["action"], e.get("version"), e.get("previous")) for e in system.security.audit.entries()]
    assert events[:2] == [("promote", "v0002", "v0001"), ("rollback", "v0001", "v0002")]
    assert ("promote", "v0002", "v0001") in [(e["action"], e.get("version"), e.get("previous"))  # by the gate
                                             for e in system.security.audit.entries() if e["actor"] == "gate"]


def test_train_now_finishes_and_the_run_its_chart_and_the_gate_evidence_appear(app_env: Config) -> None:
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
    # The real gate on the tiny random model: nothing visibly learned, so the base stays served,
    # and the page says why, check by check.
    versions = [d.value for d in at.dataframe if "version" in d.value.columns and "served" in d.value.columns][0]
    assert list(versions["version"]) == ["v0001", "base"] and list(versions["served"]) == [False, True]
    assert versions.iloc[0]["gate"].startswith("not passed vs base · ❌ rated")
    checks = next(d.value for d in at.dataframe if "what was measured" in d.value.columns)
    assert list(checks["check"])[:1] == ["Rated answers learned"] and "failed" in checks.iloc[0]["status"]
    rated = next(d.value for d in at.dataframe if "match before" in d.value.columns)
    assert len(rated) == 4 and {"before", "after", "match before", "match after"} <= set(rated.columns)

    at.switch_page("pages/metrics.py").run()
    assert not at.exception
    charts = at.get("plotly_chart")
    assert len(charts) >= 2
    loss = json.loads(charts[0].proto.spec)
    assert [t["name"] for t in loss["data"]][:1] == ["train loss"]
    # The gate scored the new version and the base on the same items, through the served runtime.
    rouge = json.loads(charts[2].proto.spec)
    assert [bar["x"] for bar in rouge["data"]][0] == ["deepseek@base", "deepseek@v0001"]
    table = next(d.value for d in at.dataframe if "runtime" in d.value.columns)
    assert {runtime.split(";")[0] for runtime in table["runtime"]} == {"torch (fp32 weights)"}

    # Side by side on the rated answers, with significance of the differences.
    at.multiselect(key="metrics_compare_models").set_value(["deepseek@base", "deepseek@v0001"]).run()
    at.selectbox(key="metrics_compare_suite").set_value("rated").run()
    at.button(key="metrics_compare").click().run()
    assert not at.exception, at.exception
    summary = at.session_state["metrics_comparison"].summary
    assert list(summary["model"]) == ["deepseek@base", "deepseek@v0001"]
    significance = at.session_state["metrics_comparison"].significance
    assert set(significance["metric"]) >= {"rougeL", "bleu"}
    # four rated answers are too few to call any difference
    assert not significance["significant"].any()
    assert set(significance["verdict"]) == {"too few items to tell (n = 4; at least 10 needed)"}
    assert any(i.value.startswith("Too few items to tell (n = 4)") for i in at.info)


def test_metrics_page_empty_state(app_env: Config) -> None:
    at = new_app()
    at.run()
    at.switch_page("pages/metrics.py").run()
    assert not at.exception
    assert any("No training runs yet" in i.value for i in at.info)


def test_metrics_run_picker_opens_on_the_newest_run(app_env: Config) -> None:
    runs = app_env.data_path / "runs"
    for run_id, loss in (("20261201-090000-aaaa", 2.0), ("20261202-090000-bbbb", 1.0)):
        (runs / run_id).mkdir(parents=True)
        (runs / run_id / "run.json").write_text(json.dumps({"run_id": run_id, "state": "completed"}))
        (runs / run_id / "events.jsonl").write_text(
            json.dumps({"event": "step", "ts": "2026-12-01T09:00:00Z", "step": 1, "loss": loss}) + "\n")
    at = new_app()
    at.run()
    at.switch_page("pages/metrics.py").run()
    assert not at.exception, at.exception
    picker = at.selectbox(key="metrics_run")
    assert picker.options == ["20261202-090000-bbbb", "20261201-090000-aaaa"]
    assert picker.value == "20261202-090000-bbbb"


def test_chat_says_when_an_answer_was_stopped_for_repeating_itself(app_env: Config, make_config) -> None:
    # The tiny random model loops under plain greedy decoding; the loop guard stops it.
    make_config(repeat_penalty=1.0, max_new_tokens=96)  # rewrites the config file the app reads
    at = new_app()
    at.run()
    at.chat_input(key="chat_input").set_value("Tell me a story about a cat.").run()
    assert not at.exception, at.exception
    assert at.session_state["chat_history"][-1]["finish_reason"] == "repetition"
    assert any("began repeating itself" in w.value for w in at.warning)


def test_every_page_renders_with_the_learner_switched_off(app_env: Config, make_config) -> None:
    make_config(enabled=False)  # rewrites the config file the app reads
    at = new_app()
    at.run()
    assert not at.exception, at.exception
    for page in ("pages/feedback.py", "pages/training.py", "pages/metrics.py", "pages/insights.py", "pages/chat.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
    assert not at.sidebar.error  # the learner is off by choice, not broken


def test_chat_says_the_torch_loop_answers_while_llama_cpp_is_built(
    app_env: Config, make_config, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """``make run`` on a new machine: llama.cpp compiles in the background and the Chat page says
    so where a newcomer looks, without opening the status panel."""
    import os

    import dmac_core.backends.local as local
    import dmac_core.learner.llama_cpp_build as build

    status = tmp_path / "llama-cpp-build.json"
    status.write_text(json.dumps({"state": "building", "pid": os.getpid(), "fraction": 0.3, "seconds_left": 330,
                                  "log": ".venv/logs/llama-cpp-build.log"}))
    monkeypatch.setattr(build, "default_status_path", lambda: status)
    monkeypatch.setattr(local, "llama_cpp_importable", lambda: False)
    make_config(precision="auto", runtime="auto")  # rewrites the config file the app reads
    at = new_app()
    at.run()
    assert not at.exception, at.exception
    [note] = [i.value for i in at.sidebar.info]
    assert "slower torch loop while llama.cpp is being built in the background (30%, about 6 min left" in note
    at.chat_input(key="chat_input").set_value("What is a workbench?").run()
    assert not at.exception, at.exception
    assert at.session_state["chat_history"][-1]["model"] == "deepseek"


def test_a_run_from_the_page_the_cli_and_a_launcher_takes_the_same_steps(app_env: Config) -> None:
    """One wiring: "Train now", ``python -m dmac_core train`` and the torchrun / accelerate
    entry (here one process) each prepare, train, register with a scope, gate, score and warm
    up the same way, so their records carry the same parts."""
    from dmac_core.__main__ import main
    from dmac_core.learner.registry import ModelRegistry
    from dmac_core.training.distributed import train_distributed

    seed_ratings(app_env)
    at = new_app()
    at.run()
    at.switch_page("pages/training.py").run()
    at.button(key="train_start").click().run()
    assert dmac_core.get_learning_system().jobs.wait(180).state == "completed"
    assert main(["--config", app_env.source, "train"]) == 0
    launched = train_distributed(app_env)
    assert launched is not None

    runs = {run["trigger"]: run for run in dmac_core.get_learning_system().jobs.runs()}
    assert set(runs) == {"manual", "cli", "distributed"}
    keys = {trigger: set(run) - {"resumes"} for trigger, run in runs.items()}
    assert keys["cli"] == keys["manual"] and keys["distributed"] == keys["manual"], keys
    for trigger, run in runs.items():
        assert run["state"] == "completed", (trigger, run["message"])
        assert set(run["timings"]) == {"prepare_s", "train_s", "gate_s", "serve_s", "total_s"}, trigger
        assert [c["check"] for c in run["gate"]["checks"]] == [c["check"] for c in runs["manual"]["gate"]["checks"]]
        assert run["evaluations"], trigger  # the gate's scored answers (Metrics page)
        version = ModelRegistry(app_env.data_path / "models").get(run["version"])
        taught = run["lineage"]["counts"]["sft_train"]
        assert taught == runs["manual"]["lineage"]["counts"]["sft_train"] > 0, trigger  # the same data
        assert version.metadata["scope"]["questions"] == taught and (version.path / "scope.npy").exists(), trigger
    assert runs["distributed"]["hyper_parameters"]["world_size"] == 1
    # who trained is in the audit log, from the page and from the command line
    audit = dmac_core.get_learning_system().security.audit.entries()
    trained = [(e["actor"], e["via"], e["run"]) for e in audit if e["action"] == "train"]
    assert sorted(trained) == sorted([("local", "web", runs["manual"]["run_id"]), ("local", "cli", runs["cli"]["run_id"])])


def test_compare_mode_answers_blind_then_reveals_after_the_vote(app_env: Config, tiny_model_dir, tmp_path) -> None:
    import random

    from tests.arena_fixtures import register_random_adapter

    for seed in (11, 12):
        register_random_adapter(tiny_model_dir, app_env.data_path / "models", tmp_path, seed)
    dmac_core.get_learning_system().arena_rng = random.Random(5)
    at = new_app()
    at.run()
    at.radio(key="chat_mode").set_value("Compare").run()
    assert not at.exception
    assert any("two models answer it" in i.value for i in at.info)
    at.chat_input(key="arena_input").set_value("Name a colour.").run()
    assert not at.exception, at.exception
    round_ = at.session_state["arena_round"]
    sides = round_["sides"]
    assert {sides["a"]["contestant"], sides["b"]["contestant"]} == {"deepseek@v0001", "deepseek@v0002"}
    shown = " ".join(m.value for m in at.main.markdown)
    assert "**A**" in shown and "**B**" in shown and sides["a"]["text"] in shown and sides["b"]["text"] in shown
    assert "v0001" not in shown and "v0002" not in shown and "served" not in shown  # blind while voting
    key = sides["a"]["interaction_id"]
    assert at.button(key=f"arena_submit_{key}").disabled  # no choice yet
    at.radio(key=f"arena_choice_{key}").set_value("b").run()
    at.text_input(key=f"arena_note_{key}").input("B is shorter.").run()
    at.button(key=f"arena_submit_{key}").click().run()
    assert not at.exception, at.exception
    label = {"deepseek@v0002": "DeepSeek-RL v0002 (served)", "deepseek@v0001": "DeepSeek-RL v0001"}
    expected = f"A was {label[sides['a']['contestant']]}, B was {label[sides['b']['contestant']]}"
    assert expected in at.success[0].value and "B is better" in at.success[0].value
    store = LearningStore(app_env.data_path)
    [vote] = store.records("votes")
    version = {s: sides[s]["contestant"].split("@")[1] for s in "ab"}
    assert (vote["interaction_a"], vote["interaction_b"], vote["choice"], vote["note"], vote["user"]) == (
        key, sides["b"]["interaction_id"], "b", "B is shorter.", "local")
    assert (vote["model_a"], vote["version_a"], vote["version_b"]) == ("deepseek", version["a"], version["b"])
    assert sorted(r["model_version"] for r in store.records("interactions")) == ["v0001", "v0002"]
    # back to Chat: the conversation is as it was (empty), the vote did not add a chat turn
    at.radio(key="chat_mode").set_value("Chat").run()
    assert "No messages yet" in at.info[0].value and at.session_state["chat_history"] == []


def test_compare_mode_with_one_contestant_says_what_is_missing(app_env: Config) -> None:
    at = new_app()
    at.run()
    at.radio(key="chat_mode").set_value("Compare").run()
    at.chat_input(key="arena_input").set_value("Name a colour.").run()
    assert not at.exception
    assert "needs two models" in at.error[0].value
    assert LearningStore(app_env.data_path).records("interactions") == []


def test_votes_train_a_dpo_run_chosen_on_the_training_page(app_env: Config) -> None:
    store = LearningStore(app_env.data_path, fsync=False)
    votes = []
    for i in range(4):  # four blind votes, no star rating at all
        a = store.append_interaction(model="deepseek", model_version="base", prompt=f"Fact {i}?", response=f"Right {i}.")
        b = store.append_interaction(model="gemini", prompt=f"Fact {i}?", response=f"Wrong {i}.")
        votes.append(store.append_vote(user="local", prompt=f"Fact {i}?", interaction_a=a.id, interaction_b=b.id,
                                       model_a="deepseek", model_b="gemini", version_a="base",
                                       choice="a" if i % 2 else "b").id)
    system = dmac_core.get_learning_system()
    system.jobs.gate = scripted_gate(app_env, system.registry)
    at = new_app()
    at.run()
    at.switch_page("pages/training.py").run()
    assert at.selectbox(key="train_method").value == "sft"  # the configured method
    at.button(key="train_start").click().run()
    assert "Only 0 rated answers" in at.warning[0].value  # SFT has nothing to learn from votes
    at.selectbox(key="train_method").set_value("dpo").run()
    at.button(key="train_start").click().run()
    assert not at.exception and not at.warning
    assert system.jobs.wait(180).state == "completed"
    [run] = system.runs()
    assert run["method"] == "dpo" and sorted(run["lineage"]["vote_ids"]) == sorted(votes)
    assert run["lineage"]["counts"]["dpo_from_votes"] == 4 and run["lineage"]["feedback_ids"] == []
    data = json.loads((app_env.data_path / "runs" / run["run_id"] / "data.json").read_text())
    pairs = sorted((p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in data["dpo"] + data["dpo_eval"])
    assert pairs == [("Right 1.", "Wrong 1."), ("Right 3.", "Wrong 3."), ("Wrong 0.", "Right 0."), ("Wrong 2.", "Right 2.")]
    trains = [e for e in system.security.audit.entries() if e["action"] == "train"]
    assert [(e["actor"], e["method"], e["run"]) for e in trains] == [("local", "dpo", run["run_id"])]
    at.run()
    runs = [d.value for d in at.dataframe if "dpo from votes" in d.value.columns][0]
    assert runs.loc[0, ["method", "votes", "dpo from votes"]].tolist() == ["dpo", 4, 4]
