"""Metrics: loss curves of each run, and ROUGE/BLEU/accuracy per model version."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dmac_core.charts import accuracy_figure, eval_metrics_frame, loss_figure, version_metrics_figure
from pages.common import services, show_log_health

system = services()

# -- title ---------------------------------------------------------------------------------
st.title("📈 Metrics")
st.caption(
    "Training and validation loss per step, token accuracy, and ROUGE / BLEU of each model version "
    "on the same held-out items. Definitions are in the README."
)
show_log_health(system)

# -- training runs -------------------------------------------------------------------------
st.subheader("Training runs")
runs = system.jobs.runs()
if not runs:
    st.info("No training runs yet — rate answers in Chat, then press Train now on the Training page.", icon="ℹ️")
else:
    run_ids = [run["run_id"] for run in runs][::-1]  # newest first
    run_id = st.selectbox("Run", run_ids, key="metrics_run")
    events = system.jobs.run_events(run_id)
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
frame = eval_metrics_frame(system.store.evals())
if frame.empty:
    st.info("No evaluations yet. Each finished training run evaluates its new version automatically.", icon="ℹ️")
else:
    suites = sorted(frame["suite"].dropna().unique())
    suite = st.selectbox("Suite", suites, key="metrics_suite")
    part = frame[frame["suite"] == suite]
    st.plotly_chart(version_metrics_figure(part), key="metrics_rouge")
    st.plotly_chart(version_metrics_figure(part, ("bleu",)), key="metrics_bleu")
    shown = part.drop(columns=["label"]).sort_values("ts", ascending=False)
    st.dataframe(shown, hide_index=True, width="stretch", key="metrics_table")
    st.download_button(
        "Download CSV", shown.to_csv(index=False).encode("utf-8"), "evaluations.csv", "text/csv",
        key="metrics_download",
    )

# -- ratings ---------------------------------------------------------------------------------
st.subheader("Ratings")
feedback = system.store.feedback()
if feedback.empty:
    st.info("No ratings yet.", icon="ℹ️")
else:
    counts = feedback["rating"].value_counts().reindex([1, 2, 3, 4, 5], fill_value=0)
    st.bar_chart(pd.DataFrame({"answers": counts.values}, index=[f"{r} ⭐" for r in counts.index]))
