"""The signals on their pages (Streamlit AppTest, tiny model): the leaderboard on Metrics; second
opinions, agreement between analysts and the judge on Feedback."""

from __future__ import annotations

from pathlib import Path

import yaml
from streamlit.testing.v1 import AppTest

from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.logs.store import LearningStore
from tests.conftest import write_config

APP = str(PROJECT_ROOT / "app.py")


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def log(store: LearningStore, prompt: str, model: str, response: str, version: str | None = None) -> str:
    return store.append_interaction(model=model, model_version=version, prompt=prompt, response=response).id


def test_metrics_page_shows_the_leaderboard_and_a_head_to_head(app_env: Config) -> None:
    store = LearningStore(app_env.data_path, fsync=False)
    for i in range(6):
        a = log(store, f"Q{i}?", "deepseek", f"new {i}", "v0002")
        b = log(store, f"Q{i}?", "deepseek", f"old {i}", "v0001")
        store.append_vote(user="ana", prompt=f"Q{i}?", interaction_a=a, interaction_b=b, model_a="deepseek",
                          model_b="deepseek", version_a="v0002", version_b="v0001", choice="a" if i < 5 else "tie")
    at = open_page("pages/metrics.py")
    board = next(d.value for d in at.dataframe if "strength" in d.value.columns)
    assert board["entry"].tolist() == ["deepseek@v0002", "deepseek@v0001"]
    assert board.set_index("entry").loc["deepseek@v0002", ["votes", "wins", "ties"]].tolist() == [6, 5, 1]
    assert any("Too few votes to tell" in i.value for i in at.info)  # 6 < leaderboard.min_votes (20)
    [h2h] = [m for m in at.metric if m.label.startswith("P(")]
    assert h2h.label == "P(deepseek@v0002 beats deepseek@v0001)" and int(h2h.value.rstrip("%")) > 50
    assert any("too few votes to tell" in c.value for c in at.caption)


def test_metrics_page_without_votes_says_so(app_env: Config) -> None:
    at = open_page("pages/metrics.py")
    assert any("No blind votes yet" in i.value for i in at.info)


def test_feedback_page_second_opinion_blind_then_agreement(app_env: Config) -> None:
    store = LearningStore(app_env.data_path, fsync=False)
    ids = [log(store, f"What is item {i}?", "deepseek", f"Item {i} is a thing.") for i in range(3)]
    for iid, stars in zip(ids, [5, 3, 1]):
        store.append_feedback(interaction_id=iid, rating=stars, user="ana")
    at = open_page("pages/feedback.py")
    assert any("No answer is rated by two analysts yet" in i.value for i in at.info)
    # the local user (an admin without sign-in) sends the answers to themself for a second opinion
    at.selectbox(key="fb_second_assignee").set_value("local").run()
    at.number_input(key="fb_second_count").set_value(2).run()
    at.button(key="fb_second_send").click().run()
    assert not at.exception, at.exception
    assert any("Sent 2 answers to local" in s.value for s in at.success)
    at.run()
    assert at.subheader[0].value == "Waiting for your second opinion"
    review = at.dataframe[0].value  # the review table leaves out answers waiting for this analyst
    assert len(review) == 1
    first = sorted(k for k in (s.key for s in at.selectbox) if k.startswith("fb_second_") and k != "fb_second_assignee")
    assert len(first) == 2  # one rating control per answer waiting
    iid = first[0].removeprefix("fb_second_")
    at.selectbox(key=first[0]).set_value(4).run()
    at.button(key=f"fb_second_save_{iid}").click().run()
    assert not at.exception, at.exception
    mine = [f for f in LearningStore(app_env.data_path).records("feedback") if f["user"] == "local"]
    assert [(f["interaction_id"], f["rating"]) for f in mine] == [(iid, 4)]
    alpha = next(m for m in at.metric if m.label.startswith("Krippendorff"))
    items = next(m for m in at.metric if m.label == "Answers rated by 2+ analysts")
    assert items.value == "1" and alpha.value == "—"  # one shared answer: α is undefined, and says so


def test_feedback_page_judges_unrated_answers_with_the_configured_judge(app_env: Config) -> None:
    data = yaml.safe_load(Path(app_env.source).read_text())
    data["judge"] = {"model": "deepseek", "max_items": 2, "min_items": 2}
    write_config(Path(app_env.source), data)
    store = LearningStore(app_env.data_path, fsync=False)
    ids = [log(store, f"Name a colour {i}?", "deepseek", f"Colour {i}.") for i in range(3)]
    at = open_page("pages/feedback.py")
    at.radio(key="fb_judge_what").set_value("unrated").run()
    at.button(key="fb_judge_run").click().run()
    assert not at.exception, at.exception
    fresh = LearningStore(app_env.data_path)
    judgments = fresh.records("judgments")
    assert len(judgments) == 2 and {j["interaction_id"] for j in judgments} <= set(ids)
    assert all(j["parsed"] == (j["score"] is not None) and j["user"] == "local" for j in judgments)
    calls = [r for r in fresh.records("interactions") if r.get("purpose") == "judge"]
    assert sorted(r["id"] for r in calls) == sorted(j["judge_interaction_id"] for j in judgments)
    assert any(s.value.startswith("2 label(s) written") for s in at.success)
    table = next(d.value for d in at.dataframe if "kappa" in d.value.columns)
    assert table["judge"].tolist() == ["deepseek"] and table["n_items"].tolist() == [0]
    assert table["qualifies"].tolist() == [False]


def test_only_trainers_send_second_opinions_and_ask_the_judge(app_env: Config) -> None:
    from dmac_core.security.roles import Role
    from tests.test_pages_roles import sign_in, users

    data = yaml.safe_load(Path(app_env.source).read_text())
    data["judge"] = {"model": "deepseek"}
    write_config(Path(app_env.source), data)
    users(("ann", Role.ADMIN), ("bo", Role.ANALYST), ("tia", Role.TRAINER), ("viv", Role.VIEWER))
    store = LearningStore(app_env.data_path, fsync=False)
    iid = log(store, "What is a ledger?", "deepseek", "A ledger is a record of accounts.")
    store.append_feedback(interaction_id=iid, rating=4, user="ann")

    analyst = sign_in("bo", "password-bo-1")
    analyst.switch_page("pages/feedback.py").run()
    assert not analyst.exception, analyst.exception
    keys = [b.key for b in analyst.button]
    assert "fb_judge_run" not in keys and "fb_second_send" not in keys
    assert any(c.value.startswith("🔒 Asking the judge: your role (analyst) cannot") for c in analyst.caption)

    trainer = sign_in("tia", "password-tia-1")
    trainer.switch_page("pages/feedback.py").run()
    assert trainer.selectbox(key="fb_second_assignee").options == ["ann", "bo", "tia"]  # a viewer cannot rate
    trainer.selectbox(key="fb_second_assignee").set_value("bo").run()
    trainer.button(key="fb_second_send").click().run()
    assert any("Sent 1 answer to bo" in s.value for s in trainer.success)

    analyst.run()
    assert analyst.subheader[0].value == "Waiting for your second opinion"
    assert not analyst.dataframe  # the review table (it would show ann's rating) leaves it out until rated
