"""Plotly figures for the Training and Metrics pages (built here so they are testable)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

METRIC_LABELS = {
    "rouge1": "ROUGE-1",
    "rouge2": "ROUGE-2",
    "rougeL": "ROUGE-L",
    "bleu": "BLEU",
    "token_accuracy": "Token accuracy",
    "loss": "Loss on references",
}


def events_frame(events: list[dict[str, Any]]) -> pd.DataFrame:
    """Step and eval events of a run as one tidy frame (step, kind, value)."""
    rows = []
    for event in events:
        step = event.get("step")
        if event.get("event") == "step" and event.get("train_loss") is not None:
            rows.append({"step": step, "series": "train loss", "value": float(event["train_loss"])})
        elif event.get("event") == "eval":
            if event.get("eval_loss") is not None:
                rows.append({"step": step, "series": "validation loss", "value": float(event["eval_loss"])})
            if event.get("eval_token_accuracy") is not None:
                rows.append({"step": step, "series": "token accuracy", "value": float(event["eval_token_accuracy"])})
    return pd.DataFrame(rows, columns=["step", "series", "value"])


def loss_figure(events: list[dict[str, Any]], title: str = "Loss per optimizer step") -> go.Figure:
    """Train and validation loss against optimizer steps."""
    frame = events_frame(events)
    figure = go.Figure()
    for series, mode in (("train loss", "lines+markers"), ("validation loss", "lines+markers")):
        part = frame[frame["series"] == series]
        if not part.empty:
            figure.add_trace(go.Scatter(x=part["step"], y=part["value"], mode=mode, name=series))
    figure.update_layout(title=title, xaxis_title="optimizer step", yaxis_title="loss", height=340,
                         margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h"))
    return figure


def accuracy_figure(events: list[dict[str, Any]]) -> go.Figure:
    """Validation token accuracy against optimizer steps."""
    frame = events_frame(events)
    part = frame[frame["series"] == "token accuracy"]
    figure = go.Figure(go.Scatter(x=part["step"], y=part["value"], mode="lines+markers", name="token accuracy"))
    figure.update_layout(title="Validation token accuracy", xaxis_title="optimizer step", yaxis_title="accuracy",
                         yaxis_range=[0, 1], height=300, margin=dict(l=10, r=10, t=40, b=10))
    return figure


def eval_metrics_frame(evals: pd.DataFrame) -> pd.DataFrame:
    """Eval records flattened: one row per record with model, version, suite and metrics."""
    if evals.empty:
        return pd.DataFrame(columns=["ts", "model", "model_version", "suite", "n"])
    rows = []
    for record in evals.to_dict("records"):
        metrics = record.get("metrics") or {}
        row = {key: record.get(key) for key in ("ts", "model", "model_version", "suite", "n")}
        # what answered (runtime and weights) and how (decoding): numbers of different paths differ
        row.update({key: record.get(key) for key in ("runtime", "decoding", "loss_model") if record.get(key)})
        row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        row["label"] = f"{record.get('model')}@{record.get('model_version') or '-'}"
        rows.append(row)
    return pd.DataFrame(rows)


def version_metrics_figure(frame: pd.DataFrame, metrics: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")) -> go.Figure:
    """Latest score per model version for the given metrics, as grouped bars."""
    figure = go.Figure()
    if frame.empty:
        return figure
    latest = frame.sort_values("ts").groupby("label", sort=False).tail(1)
    for metric in metrics:
        if metric in latest.columns:
            figure.add_trace(go.Bar(x=latest["label"], y=latest[metric], name=METRIC_LABELS.get(metric, metric)))
    figure.update_layout(barmode="group", height=340, margin=dict(l=10, r=10, t=40, b=10),
                         title="Scores per model version (latest evaluation of each)", legend=dict(orientation="h"))
    return figure
