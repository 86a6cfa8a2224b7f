"""Signals on real logs: the leaderboard from votes, routing by strengths, the LLM judge and its
calibration gate into training, second opinions, and deletion of judge labels with a user."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from dmac_core.config import JudgeConfig, LeaderboardConfig
from dmac_core.logs.records import RecordError
from dmac_core.logs.store import LearningStore
from dmac_core.privacy.deletion import delete_user_data
from dmac_core.serving.errors import RoutingError
from dmac_core.serving.router import ModelManager
from dmac_core.signals import second_opinion
from dmac_core.signals.agreement import analyst_agreement, ratings_by_analyst
from dmac_core.signals.judge import answers_to_judge, judge_answers, parse_score, rubric_id, score_prompt
from dmac_core.signals.judge_agreement import judge_agreement, qualified_labels
from dmac_core.signals.leaderboard import build_leaderboard, routing_strengths, vote_sides
from dmac_core.training.dataset import build_dataset
from tests.test_router import ScriptedBackend, api_config


def answer(store: LearningStore, prompt: str, model: str, response: str, version: str | None = None,
           user: str = "ana") -> str:
    return store.append_interaction(model=model, model_version=version, prompt=prompt, response=response,
                                    user=user).id


def vote(store: LearningStore, i: int, a: tuple[str, str | None], b: tuple[str, str | None], choice: str,
         user: str = "ana") -> None:
    prompt = f"Question {i}?"
    ia = answer(store, prompt, a[0], f"{a[0]} answer {i}", a[1], user)
    ib = answer(store, prompt, b[0], f"{b[0]} answer {i}", b[1], user)
    store.append_vote(user=user, prompt=prompt, interaction_a=ia, interaction_b=ib, model_a=a[0], model_b=b[0],
                      version_a=a[1], version_b=b[1], choice=choice)


# -- leaderboard ---------------------------------------------------------------------------------
def test_leaderboard_counts_every_vote_and_keeps_learner_versions_apart(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    v3, v4, gem = ("deepseek", "v0003"), ("deepseek", "v0004"), ("gemini", None)
    vote(store, 0, v4, v3, "a")
    vote(store, 1, v3, v4, "b")
    vote(store, 2, v4, gem, "tie")
    vote(store, 3, gem, v3, "both_bad")
    vote(store, 4, gem, v3, "a")
    board = build_leaderboard(vote_sides(store.votes()), LeaderboardConfig(min_votes=3, bootstrap_samples=60))
    table = board.table.set_index("entry")
    assert set(table.index) == {"deepseek@v0003", "deepseek@v0004", "gemini"}
    assert table.loc["deepseek@v0004", ["votes", "wins", "losses", "ties", "both_bad"]].tolist() == [3, 2, 0, 1, 0]
    assert table.loc["deepseek@v0003", ["votes", "wins", "losses", "ties", "both_bad"]].tolist() == [4, 0, 3, 0, 1]
    assert table.loc["gemini", ["votes", "wins", "losses", "ties", "both_bad"]].tolist() == [3, 1, 0, 1, 1]
    assert board.table["rank"].tolist() == [1, 2, 3] and board.table["entry"].iloc[-1] == "deepseek@v0003"
    assert board.n_votes == 5  # both_bad counted as a tie
    excluded = build_leaderboard(vote_sides(store.votes()), LeaderboardConfig(both_bad="exclude", bootstrap_samples=60))
    assert excluded.n_votes == 4
    assert excluded.table.set_index("entry").loc["gemini", "both_bad"] == 1  # still counted
    h2h = board.head_to_head("deepseek@v0004", "deepseek@v0003")
    assert h2h["p_a_beats_b"] > 0.5 and h2h["low"] <= h2h["p_a_beats_b"] <= h2h["high"]
    thin = build_leaderboard(vote_sides(store.votes()), LeaderboardConfig(min_votes=20, bootstrap_samples=60))
    assert thin.head_to_head("deepseek@v0004", "deepseek@v0003")["verdict"].startswith("too few votes")
    assert not thin.table["enough"].any()
    with pytest.raises(ValueError, match="no votes"):
        board.head_to_head("deepseek@v0009", "gemini")


@pytest.mark.parametrize("share, verdict", [(0.8, "deepseek@v0004 is stronger"), (0.5, "cannot tell yet")])
def test_a_better_version_is_called_stronger_and_an_even_one_is_not(tmp_path: Path, share: float, verdict: str) -> None:
    store = LearningStore(tmp_path, fsync=False)
    wins = round(60 * share)
    for i in range(60):  # v0004 wins ``share`` of its 60 blind votes against v0003
        vote(store, i, ("deepseek", "v0004"), ("deepseek", "v0003"), "a" if i < wins else "b")
    board = build_leaderboard(vote_sides(store.votes()), LeaderboardConfig(min_votes=20, bootstrap_samples=200))
    h2h = board.head_to_head("deepseek@v0004", "deepseek@v0003")
    assert h2h["verdict"].startswith(verdict)
    assert (h2h["low"] > 0.5) == (share == 0.8)


# -- routing by strengths -----------------------------------------------------------------------
def test_best_rated_routing_by_vote_strengths_picks_the_stronger_model(tmp_path: Path) -> None:
    config = api_config(tmp_path, strategy="best_rated", rank_by="votes", best_rated_min_samples=5, exploration=0.0)
    store = LearningStore(config.data_path, fsync=False)
    for i in range(12):  # cheap wins 10 of 12 blind votes against premium
        vote(store, i, ("premium", None), ("cheap", None), "b" if i < 10 else "a")
    # ...while star ratings say the opposite: the switch decides which signal routes
    for i in range(6):
        store.append_feedback(interaction_id=answer(store, f"r{i}", "premium", "p"), rating=5)
        store.append_feedback(interaction_id=answer(store, f"s{i}", "cheap", "c"), rating=2)
    backends = {"deepseek": ScriptedBackend("deepseek", ok=False, reason="off"), "premium": ScriptedBackend("premium"),
                "cheap": ScriptedBackend("cheap")}
    notes: list[str] = []
    by_votes = ModelManager(config, store, backends, rng=random.Random(0))
    assert [n for n, _ in by_votes.candidates(notes=notes)][:2] == ["cheap", "premium"]
    assert notes and notes[0].startswith("blind-vote strengths: cheap +")
    strengths = by_votes.vote_strengths()
    assert strengths["cheap"][0] > strengths["premium"][0] and strengths["cheap"][1] == 12
    ratings_config = api_config(tmp_path, strategy="best_rated", rank_by="ratings", best_rated_min_samples=5,
                                exploration=0.0)
    by_ratings = ModelManager(ratings_config, store, backends, rng=random.Random(0))
    assert [n for n, _ in by_ratings.candidates()][:2] == ["premium", "cheap"]


def test_routing_strengths_speak_for_the_served_learner_version_only(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    for i in range(8):
        vote(store, i, ("deepseek", "v0001"), ("gemini", None), "b")
        vote(store, 100 + i, ("deepseek", "v0002"), ("gemini", None), "a")
    sided = vote_sides(store.votes())
    served_new = routing_strengths(sided, "v0002")
    served_old = routing_strengths(sided, "v0001")
    assert served_new["deepseek"][0] > served_new["gemini"][0] and served_new["deepseek"][1] == 8
    assert served_old["deepseek"][0] < served_old["gemini"][0]
    assert "deepseek" not in routing_strengths(sided, "v0007")  # no votes for what answers now


# -- the judge -----------------------------------------------------------------------------------
class ScriptedJudge:
    """The router's ``respond`` with replies from a script; logs each call like the router."""

    def __init__(self, store: LearningStore, replies: list[str]) -> None:
        self.store, self.replies, self.calls = store, list(replies), []

    def __call__(self, text: str, model: str, user: str, purpose: str) -> Any:
        self.calls.append((text, model, user, purpose))
        if not self.replies:
            raise RoutingError("judge: 10/10 requests today")
        reply = self.replies.pop(0)
        iid = self.store.append_interaction(model=model, prompt=text, response=reply, purpose=purpose, user=user).id

        class Result:
            pass

        result = Result()
        result.text, result.model_version, result.interaction_id = reply, None, iid  # type: ignore[attr-defined]
        return result


def test_judge_scores_through_the_router_and_records_unparsed_replies_as_such(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    first = answer(store, "What is 2+2?", "gemini", "4")
    second = answer(store, "Capital of France?", "gemini", "Lyon")
    rated = answer(store, "Rated one?", "gemini", "yes")
    store.append_feedback(interaction_id=rated, rating=4, user="bo")
    rubric = "Rate correctness."
    items = answers_to_judge(store, "gemini", rubric, rated=False, limit=10)
    assert [i["id"] for i in items] == [second, first]  # unrated only, newest first
    respond = ScriptedJudge(store, ["Wrong city. Score: 1", "Looks fine to me!"])
    run = judge_answers(store, respond, "gemini", rubric, items, user="tia", errors=(RoutingError,))
    assert run.stopped is None and run.unparsed == 1
    assert respond.calls[0][0] == score_prompt(rubric, "Capital of France?", "Lyon")
    assert {c[3] for c in respond.calls} == {"judge"}
    rows = store.records("judgments")
    assert [(r["interaction_id"], r["score"], r["parsed"], r["kind"]) for r in rows] == [
        (second, 1, True, "score"), (first, None, False, "score")]
    assert rows[0]["rubric_id"] == rubric_id(rubric) and rows[0]["user"] == "tia"
    judge_calls = [r for r in store.records("interactions") if r.get("purpose") == "judge"]
    assert [r["id"] for r in judge_calls] == [rows[0]["judge_interaction_id"], rows[1]["judge_interaction_id"]]
    assert answers_to_judge(store, "gemini", rubric, rated=False, limit=10) == []  # judged once per rubric
    assert len(answers_to_judge(store, "gemini", "Another rubric.", rated=False, limit=10)) == 2
    # a cap reached mid-run stops it: what was written stays, nothing is guessed
    rerun = judge_answers(store, ScriptedJudge(store, []), "gemini", "Another rubric.", items, "tia", (RoutingError,))
    assert rerun.judgments == [] and "10/10" in (rerun.stopped or "")


def test_a_judgment_needs_its_label_to_match_parsed_and_a_logged_interaction(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    iid = answer(store, "q?", "gemini", "a")
    base = dict(judge="gemini", rubric_id="r1", kind="score", interaction_id=iid)
    with pytest.raises(RecordError, match="parsed"):
        store.append_judgment(**base, score=None, parsed=True)
    with pytest.raises(RecordError, match="score"):
        store.append_judgment(**base, score=6, parsed=True)
    with pytest.raises(RecordError, match="no interaction"):
        store.append_judgment(**{**base, "interaction_id": "missing"}, score=3, parsed=True)
    assert store.records("judgments") == []


@pytest.mark.parametrize("reply, score", [("Score: 4", 4), ("reasons… **Rating:** 2/5", 2), ("3", 3),
                                          ("Score: 2\nOn reflection, Score: 5", 5), ("Score: 4.5", None),
                                          ("Score: 10", None), ("It is good.", None), ("", None)])
def test_parse_score_reads_a_stated_score_or_nothing(reply: str, score: int | None) -> None:
    assert parse_score(reply) == score


def seed_judged(store: LearningStore, rated: int, agree: bool, unrated_scores: list[int]) -> list[str]:
    """``rated`` answers rated by an analyst and scored by the judge (the same score when
    ``agree``, the mirrored one otherwise), and unrated answers with judge scores; their ids."""
    rid = rubric_id("R")
    for i in range(rated):
        iid = answer(store, f"rated question {i}?", "gemini", f"rated answer {i}")
        stars = 1 + i % 5
        store.append_feedback(interaction_id=iid, rating=stars, user="ana")
        store.append_judgment(judge="gemini", rubric_id=rid, rubric="R", kind="score", interaction_id=iid,
                              score=stars if agree else 6 - stars, parsed=True)
    unrated = []
    for i, score in enumerate(unrated_scores):
        iid = answer(store, f"unrated question {i}?", "gemini", f"unrated answer {i}")
        store.append_judgment(judge="gemini", rubric_id=rid, rubric="R", kind="score", interaction_id=iid,
                              score=score, parsed=True)
        unrated.append(iid)
    return unrated


def test_judge_labels_below_the_bar_never_reach_training(tmp_path: Path, make_config: Any) -> None:
    store = LearningStore(tmp_path, fsync=False)
    seed_judged(store, rated=30, agree=False, unrated_scores=[5, 5, 1])
    judge = JudgeConfig(model=None, agreement_bar=0.6, min_items=30)
    [row] = judge_agreement(store, judge).to_dict("records")
    assert row["n_items"] == 30 and row["kappa"] < 0 and not row["qualifies"]
    assert qualified_labels(store, judge) == []
    cfg = make_config().learner
    data = build_dataset(store, cfg, method="sft", judge_labels=qualified_labels(store, judge))
    assert not any(ex.get("judge_label") for ex in data.sft_train + data.kto)
    assert data.lineage["judge_labels"]["used"] == 0


def test_judge_labels_above_the_bar_reach_training_marked_and_in_lineage(tmp_path: Path, make_config: Any) -> None:
    store = LearningStore(tmp_path, fsync=False)
    unrated = seed_judged(store, rated=30, agree=True, unrated_scores=[5, 4, 3, 1])
    too_few = JudgeConfig(agreement_bar=0.6, min_items=31)
    assert qualified_labels(store, too_few) == []  # agreement is perfect, but on too few answers
    judge = JudgeConfig(agreement_bar=0.6, min_items=30)
    [row] = judge_agreement(store, judge).to_dict("records")
    assert row["kappa"] == pytest.approx(1.0) and row["pairwise_accuracy"] == 1.0 and row["qualifies"]
    labels = qualified_labels(store, judge)
    assert sorted(l["interaction_id"] for l in labels) == sorted(unrated)  # never the rated answers
    cfg = make_config().learner
    data = build_dataset(store, cfg, method="sft", judge_labels=labels)
    judged_sft = [ex for ex in data.sft_train + data.sft_eval if ex.get("judge_label")]
    judged_kto = [ex for ex in data.kto + data.kto_eval if ex.get("judge_label")]
    # scores 5 and 4 are SFT targets (min_rating_for_sft 4); 5, 4 desirable and 1 undesirable in KTO; 3 neither
    assert sorted(ex["completion"][0]["content"] for ex in judged_sft) == ["unrated answer 0", "unrated answer 1"]
    assert sorted((ex["completion"][0]["content"], ex["label"]) for ex in judged_kto) == [
        ("unrated answer 0", True), ("unrated answer 1", True), ("unrated answer 3", False)]
    assert all(ex["judge"] == "gemini" and ex["rubric_id"] == rubric_id("R") for ex in judged_sft + judged_kto)
    lineage = data.lineage["judge_labels"]
    assert lineage["used"] == 3 and lineage["offered"] == 4
    assert lineage["judges"] == [{"judge": "gemini", "rubric_id": rubric_id("R"), "kappa": pytest.approx(1.0),
                                  "n_items": 30}]
    assert data.lineage["counts"]["judge_labels"] == 3
    assert not set(lineage["judgment_ids"]) & set(data.lineage["feedback_ids"])  # a separate, marked source


# -- second opinions and agreement ---------------------------------------------------------------
def test_second_opinions_go_to_another_analyst_blind_and_make_agreement_measurable(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    ids = [answer(store, f"q{i}?", "gemini", f"a{i}") for i in range(6)]
    for iid, stars in zip(ids[:4], [5, 4, 2, 1]):
        store.append_feedback(interaction_id=iid, rating=stars, user="ana")
    store.append_feedback(interaction_id=ids[4], rating=3, user="bo")  # bo's own: never sent back to bo
    assert analyst_agreement(ratings_by_analyst(store)).items == 0
    with pytest.raises(ValueError):
        second_opinion.assign(store, "bo", "tia", 0)
    sent = second_opinion.assign(store, "bo", "tia", 10, seed=0)
    assert sorted(r["interaction_id"] for r in sent) == sorted(ids[:4])
    assert {(r["assignee"], r["assigned_by"], r["first_rater"]) for r in sent} == {("bo", "tia", "ana")}
    assert [r["interaction_id"] for r in second_opinion.assign(store, "cy", "tia", 10)] == [ids[4]]
    waiting = second_opinion.waiting_for(store, "bo")
    assert sorted(w["interaction_id"] for w in waiting) == sorted(ids[:4])
    assert all(set(w) == {"interaction_id", "prompt", "response", "assigned_by"} for w in waiting)  # no rating
    for iid, stars in zip(ids[:4], [5, 3, 2, 1]):
        store.append_feedback(interaction_id=iid, rating=stars, user="bo")
    assert second_opinion.waiting_for(store, "bo") == []
    summary = second_opinion.queue_summary(store).set_index("assignee")
    assert summary.loc["bo", ["assigned", "rated", "waiting"]].tolist() == [4, 4, 0]
    assert summary.loc["cy", ["assigned", "rated", "waiting"]].tolist() == [1, 0, 1]
    result = analyst_agreement(ratings_by_analyst(store))
    assert (result.items, result.analysts) == (4, 2) and 0.5 < result.alpha < 1.0


def test_an_answer_waiting_for_a_second_opinion_is_not_assigned_twice(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    iid = answer(store, "q?", "gemini", "a")
    store.append_feedback(interaction_id=iid, rating=4, user="ana")
    assert len(second_opinion.assign(store, "bo", "tia", 5)) == 1
    assert second_opinion.assign(store, "cy", "tia", 5) == []


# -- deletion ------------------------------------------------------------------------------------
def test_deleting_a_user_removes_judgments_of_their_answers_and_their_second_opinions(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    theirs = answer(store, "Eve's private question about payroll?", "gemini", "Eve's answer", user="eve")
    others = answer(store, "Bob's question about maps?", "gemini", "Bob's answer", user="bob")
    respond = ScriptedJudge(store, ["Score: 2", "Score: 4"])
    judge_answers(store, respond, "gemini", "R", [{"id": theirs, "prompt": "Eve's private question about payroll?",
                                                   "response": "Eve's answer"},
                                                  {"id": others, "prompt": "Bob's question about maps?",
                                                   "response": "Bob's answer"}], user="tia")
    store.append_feedback(interaction_id=theirs, rating=3, user="ana")
    store.append_feedback(interaction_id=others, rating=3, user="ana")
    second_opinion.assign(store, "cy", "tia", 5, seed=0)
    report = delete_user_data(store, "eve")
    fresh = LearningStore(tmp_path, fsync=False)
    assert [r["interaction_id"] for r in fresh.records("judgments")] == [others]
    assert report.removed["judgments"] == 1
    judge_prompts = [r["prompt"] for r in fresh.records("interactions") if r.get("purpose") == "judge"]
    assert len(judge_prompts) == 1 and "payroll" not in judge_prompts[0]  # the judge call quoting eve went too
    assert [r["interaction_id"] for r in second_opinion.assignments(fresh)] == [others]
    assert report.removed["second opinions"] == 1


# -- command line --------------------------------------------------------------------------------
def test_leaderboard_and_judge_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dmac_core.__main__ import main

    config = api_config(tmp_path)
    store = LearningStore(config.data_path, fsync=False)
    for i in range(4):
        vote(store, i, ("premium", None), ("cheap", None), "a")
    assert main(["--config", config.source, "leaderboard", "--pair", "premium", "cheap"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:2] == ["1", "premium"]
    assert "4 votes fitted" in out and "P(premium beats cheap) = " in out and "too few votes to tell" in out
    assert main(["--config", config.source, "leaderboard", "--pair", "premium", "nobody"]) == 2
    assert main(["--config", config.source, "judge"]) == 2
    assert "No judge is configured" in capsys.readouterr().err
    assert main(["--config", config.source, "judge", "--agreement-only"]) == 0
    assert "No judge labels yet." in capsys.readouterr().out


@pytest.mark.parametrize("agree", [True, False])
def test_train_now_uses_qualified_judge_labels_and_records_them_in_the_runs_lineage(make_config: Any,
                                                                                   agree: bool) -> None:
    import json

    from dmac_core.system import LearningSystem
    from dmac_core.training.dataset import NotEnoughData

    config = make_config(validation_fraction=0.0)
    config.judge.min_items, config.judge.agreement_bar = 3, 0.6
    system = LearningSystem(config)
    store, rid = system.store, rubric_id("R")
    for i, stars in enumerate([5, 4, 2]):  # two SFT targets from analysts: fewer than min_examples (4)
        iid = answer(store, f"Rated question {i}?", "gemini", f"Rated answer {i}.")
        store.append_feedback(interaction_id=iid, rating=stars, user="ana")
        store.append_judgment(judge="gemini", rubric_id=rid, rubric="R", kind="score", interaction_id=iid,
                              score=stars if agree else 6 - stars, parsed=True)
    labelled = []
    for i in range(2):
        iid = answer(store, f"Unrated question {i}?", "gemini", f"Unrated answer {i}.")
        labelled.append(store.append_judgment(judge="gemini", rubric_id=rid, rubric="R", kind="score",
                                              interaction_id=iid, score=5, parsed=True).id)
    if not agree:  # the judge disagrees with analysts: its labels do not count, so nothing starts
        with pytest.raises(NotEnoughData, match="Only 2 rated answers"):
            system.jobs.start(trigger="test")
        return
    info = system.jobs.start(trigger="test")
    system.jobs.cancel()
    system.jobs.wait(timeout=120)
    data = json.loads((info.run_dir / "data.json").read_text())
    judged = [ex for ex in data["sft_train"] if ex.get("judge_label")]
    assert sorted(ex["completion"][0]["content"] for ex in judged) == ["Unrated answer 0.", "Unrated answer 1."]
    lineage = json.loads((info.run_dir / "run.json").read_text())["lineage"]
    assert sorted(lineage["judge_labels"]["judgment_ids"]) == sorted(labelled)
    assert lineage["judge_labels"]["judges"][0]["n_items"] == 3


def test_pair_verdicts_are_stored_and_checked_against_the_analysts_votes(tmp_path: Path) -> None:
    from dmac_core.signals.judge import judge_pairs, pair_prompt, pairs_to_judge

    store = LearningStore(tmp_path, fsync=False)
    for i, choice in enumerate(["a", "b", "a"]):
        vote(store, i, ("premium", None), ("cheap", None), choice)
    items = pairs_to_judge(store, "gemini", "R", limit=10)
    assert [i["prompt"] for i in items] == ["Question 2?", "Question 1?", "Question 0?"]
    respond = ScriptedJudge(store, ["A is clearer. Verdict: A", "Verdict: A", "Both fine, I suppose."])
    run = judge_pairs(store, respond, "gemini", "R", items, user="tia", errors=(RoutingError,))
    assert respond.calls[0][0] == pair_prompt("R", "Question 2?", "premium answer 2", "cheap answer 2")
    assert [(j.choice, j.parsed) for j in run.judgments] == [("a", True), ("a", True), (None, False)]
    assert pairs_to_judge(store, "gemini", "R", limit=10) == []
    [row] = judge_agreement(store, JudgeConfig()).to_dict("records")
    # verdicts on questions 2 (a = vote a) and 1 (a ≠ vote b); question 0's reply had no verdict
    assert (row["pair_accuracy"], row["n_votes"], row["unparsed"], row["n_items"]) == (0.5, 2, 1, 0)
    assert not row["qualifies"]
