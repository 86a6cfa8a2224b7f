"""Metrics: loss curves of each run, ROUGE/BLEU/accuracy per model version, and the leaderboard
from blind side-by-side votes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dmac_core.system import MIN_PAIRED_ITEMS, BackendError, SuiteError
from dmac_core.views.charts import accuracy_figure, eval_metrics_frame, loss_figure, version_metrics_figure
from dmac_core.views.csv_export import csv_bytes
from dmac_core.views.review import usage_table
from pages.common import can, current_user, not_allowed, services, show_log_health


def csv_button(frame: pd.DataFrame, name: str, key: str) -> None:
    st.download_button(f"Download {name}.csv", csv_bytes(frame), f"{name}.csv",
                       "text/csv", key=key)


system = services()

# -- title ---------------------------------------------------------------------------------
st.title("📈 Metrics")
learner = system.config.learner
st.caption(
    "Training and validation loss per step, token accuracy, and ROUGE / BLEU of each model version on the "
    "same items. Definitions are in the README. "
    + (f"Answers of local versions come from what serves chat — {system.learner_serving()}; "
       if learner.evaluate_with == "served" else
       "Answers of local versions come from the transformers model in fp32 (models.deepseek.evaluate_with: fp32), "
       "not from what serves chat; ")
    + "loss and token accuracy from the transformers model. Each evaluation's runtime is in its row."
)
show_log_health(system)

# -- training runs -------------------------------------------------------------------------
st.subheader("Training runs")
runs = system.runs()
if not runs:
    st.info("No training runs yet — rate answers in Chat, then press Train now on the Training page.", icon="ℹ️")
else:
    run_ids = [run["run_id"] for run in runs]  # newest first: the run an analyst just trained
    run_id = st.selectbox("Run", run_ids, key="metrics_run")
    events = system.run_events(run_id)
    left, right = st.columns(2)
    left.plotly_chart(loss_figure(events), key="metrics_loss")
    right.plotly_chart(accuracy_figure(events), key="metrics_accuracy")

# -- evaluations per version ---------------------------------------------------------------
st.subheader("Evaluations per model version")
if st.button("Evaluate the served version now", key="metrics_evaluate"):
    with st.spinner("Generating answers and scoring them…"):
        try:
            summary = system.evaluate_served()
            st.success(f"Evaluated {summary['model']}@{summary['model_version']} on {summary['n']} items.")
        except (ValueError, RuntimeError) as exc:
            st.warning(str(exc))
frame = eval_metrics_frame(system.evaluations())
if frame.empty:
    st.info("No evaluations yet. Each finished training run evaluates its new version automatically.", icon="ℹ️")
else:
    suites = sorted(frame["suite"].dropna().unique())
    suite = st.selectbox("Suite", suites, key="metrics_suite")
    part = frame[frame["suite"] == suite]
    st.plotly_chart(version_metrics_figure(part), key="metrics_rouge")
    left, right = st.columns(2)
    left.plotly_chart(version_metrics_figure(part, ("bleu",)), key="metrics_bleu")
    right.plotly_chart(version_metrics_figure(part, ("token_accuracy",)), key="metrics_token_accuracy")
    shown = part.drop(columns=["label"]).sort_values("ts", ascending=False)
    st.dataframe(shown, hide_index=True, width="stretch", key="metrics_table")
    csv_button(shown, "evaluations", "metrics_download")

# -- side-by-side comparison -----------------------------------------------------------------
st.subheader("Compare models side by side")
st.caption(
    "The same items through several models and versions; differences in ROUGE-L / BLEU / key terms come "
    "with 95 % paired-bootstrap confidence intervals and their number of items n, so you can see whether "
    f"they are real or noise. Below {MIN_PAIRED_ITEMS} items a comparison says it has too few to tell."
)
choices, unloadable = system.comparison_choices()
picked = st.multiselect("Models and versions", choices, default=[c for c in choices if c not in unloadable][:2],
                        key="metrics_compare_models",
                        format_func=lambda c: f"{c} — cannot be loaded: {unloadable[c]}" if c in unloadable else c)
SUITE_LABELS = {"rated": "rated answers (trained on: did it learn them?)",
                "general": "general-knowledge suite (never trained: did it keep what it knew?)",
                "held-out": "held-out rated answers (validation_fraction)"}
suites = system.review_suites()
suite_name = st.selectbox("Items", list(SUITE_LABELS), format_func=SUITE_LABELS.get, key="metrics_compare_suite",
                          help="Or upload your own test set below; it is used instead when given.")
upload = st.file_uploader("Test set (YAML or JSONL: prompt, optional reference)", type=["yaml", "yml", "jsonl"],
                          key="metrics_suite_upload")
if not can("evaluate"):
    not_allowed("Running a comparison", "evaluate")
elif st.button("Run comparison", key="metrics_compare", disabled=len(picked) < 1):
    try:
        items = system.parse_test_set(upload.getvalue().decode("utf-8"), upload.name) if upload else suites.get(suite_name, [])
        if not items:
            raise SuiteError(f"No items in {SUITE_LABELS[suite_name]}: rate answers, pick other items or upload a test set.")
        bar = st.progress(0.0, text="Generating answers…")
        total, done = len(items) * len(picked), [0]

        def advance(n: int) -> None:
            done[0] += n
            bar.progress(min(done[0] / total, 1.0), text=f"Generating answers… {done[0]}/{total}")

        comparison = system.compare(items, picked, suite=upload.name if upload else suite_name, progress=advance,
                                    user=current_user())
        st.session_state.metrics_comparison = comparison
    except (SuiteError, ValueError, KeyError, UnicodeDecodeError, RuntimeError, BackendError, PermissionError) as exc:
        # a bad test set, a cap the comparison would pass (nothing was asked), a model that cannot answer
        st.warning(str(exc))
comparison = st.session_state.get("metrics_comparison")
if comparison is not None:
    st.dataframe(comparison.summary, hide_index=True, key="metrics_cmp_summary")
    csv_button(comparison.summary, "comparison-summary", "metrics_cmp_summary_csv")
    if not comparison.significance.empty:
        fewest = int(comparison.significance["n_items"].min())
        if fewest < MIN_PAIRED_ITEMS:
            st.info(f"Too few items to tell (n = {fewest}): no difference is called significant below "
                    f"{MIN_PAIRED_ITEMS} paired items with a reference. Add items or upload a larger test set.")
        st.dataframe(comparison.significance, hide_index=True, key="metrics_cmp_significance")
        csv_button(comparison.significance, "comparison-significance", "metrics_cmp_sig_csv")
    st.dataframe(comparison.table, hide_index=True, width="stretch", key="metrics_cmp_table")
    csv_button(comparison.table, "comparison-items", "metrics_cmp_items_csv")

# -- ratings ---------------------------------------------------------------------------------
st.subheader("Ratings")
feedback = system.feedback()
if feedback.empty:
    st.info("No ratings yet.", icon="ℹ️")
else:
    left, right = st.columns(2)
    counts = feedback["rating"].value_counts().reindex([1, 2, 3, 4, 5], fill_value=0)
    left.bar_chart(pd.DataFrame({"answers": counts.values}, index=[f"{r} ⭐" for r in counts.index]))
    by_version = system.ratings_by_version()
    right.dataframe(by_version, hide_index=True, key="metrics_ratings_by_version")
    csv_button(by_version, "ratings-by-version", "metrics_ratings_csv")

# -- leaderboard from blind votes -------------------------------------------------------------
st.subheader("Leaderboard from blind votes")
board = system.vote_leaderboard()
if board.table.empty:
    st.info("No blind votes yet — compare two answers side by side in Chat and vote.", icon="ℹ️")
else:
    st.caption(
        "Bradley–Terry strength of each model and learner version, fitted on the analysts' blind A/B votes "
        "(a tie counts half a win each way; a both-bad vote "
        + ("counts as a tie" if system.config.leaderboard.both_bad == "tie" else "is left out of the strengths")
        + "). A strength difference of 1 means odds of e : 1 (73 %) of being preferred; 0 is the average entry. "
        "low / high: 95 % bootstrap interval over resampled votes. Details in the README."
    )
    st.dataframe(board.table, hide_index=True, key="metrics_leaderboard",
                 column_config={"enough": st.column_config.CheckboxColumn(
                     f"≥ {board.min_votes} votes", help="leaderboard.min_votes: fewer is too few to act on")})
    thin = board.table.loc[~board.table["enough"], "entry"].tolist()
    if thin:
        st.info(f"Too few votes to tell for {', '.join(thin)} (fewer than {board.min_votes} each): "
                "their place on the board can still change a lot.", icon="⚖️")
    csv_button(board.table, "leaderboard", "metrics_leaderboard_csv")
    entries = board.table["entry"].tolist()
    if len(entries) >= 2:
        left, right = st.columns(2)
        first = left.selectbox("Does", entries, index=0, key="metrics_h2h_a")
        second = right.selectbox("beat", [e for e in entries if e != first], index=0, key="metrics_h2h_b")
        h2h = board.head_to_head(first, second)
        st.metric(f"P({first} beats {second})", f"{h2h['p_a_beats_b']:.0%}",
                  help="Under the fitted strengths, with its 95 % bootstrap interval below")
        st.caption(f"95 % interval {h2h['low']:.0%} – {h2h['high']:.0%}: {h2h['verdict']}.")
    if st.checkbox("Per Insights topic", key="metrics_leaderboard_topics"):
        for label, topic_board in system.vote_leaderboards_by_topic().items():
            with st.expander(f"Topic {label} — {topic_board.n_votes} votes"):
                st.dataframe(topic_board.table, hide_index=True, key=f"metrics_leaderboard_topic_{label}")

# -- usage -----------------------------------------------------------------------------------
st.subheader("Usage against caps")
usage = usage_table(system.model_status())
st.dataframe(usage, hide_index=True, key="metrics_usage")
csv_button(usage, "usage", "metrics_usage_csv")
