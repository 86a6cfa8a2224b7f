"""Training: press "Train now", watch the run live, cancel it, see past runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dmac_core.system import TRAINING_METHODS, JobAlreadyRunning, NotEnoughData, PermissionDenied, RegistryError
from dmac_core.views.charts import loss_figure
from dmac_core.views.review import gate_answer_changes, gate_checks_table, gate_rated_answers, runs_table
from pages.common import can, current_user, not_allowed, services, show_log_health

system = services()
learner = system.config.learner

# -- title ---------------------------------------------------------------------------------
st.title("🏋️ Training")
st.caption(
    "Fine-tunes DeepSeek-RL (LoRA) on every answer rated "
    f"{learner.min_rating_for_sft} or more — from any model. Validation loss is measured on the "
    "general-knowledge suite, which is never trained. A new version is served only if the gate finds, "
    "through the runtime that serves chat, that it answers the rated questions better, keeps the general "
    "knowledge of the served version and does not over-fit."
)
show_log_health(system)

# -- inputs: the hyper-parameters in effect -------------------------------------------------
with st.expander("Hyper-parameters in effect (config/config.yaml → models.deepseek)", expanded=False):
    st.dataframe(
        pd.DataFrame(
            [
                ("learning_rate", learner.learning_rate), ("batch_size", learner.batch_size),
                ("epochs", learner.epochs), ("evaluation_interval", learner.evaluation_interval),
                ("method", learner.method), ("LoRA r / alpha", f"{learner.lora.r} / {learner.lora.alpha}"),
                ("LoRA target modules", ", ".join(learner.lora.target_modules)),
                ("validation_fraction", learner.validation_fraction), ("max_length", learner.max_length),
                ("gate: general suite", learner.gate.general_suite or "off"),
                ("gate: general answers that may be lost", learner.gate.max_forgotten),
                ("gate: loss tolerance (promotion_tolerance)", learner.promotion_tolerance),
                ("scope: a version answers questions at least this similar to what it was taught",
                 learner.scope.threshold if learner.scope.enabled else "off (every question)"),
                ("learning_enabled", learner.learning_enabled), ("start_from", learner.start_from),
            ],
            columns=["setting", "value"],
        ).astype(str),
        hide_index=True,
        key="train_hparams",
    )

# -- call: start --------------------------------------------------------------------------------
choices = system.start_choices()
values = [value for value, _ in choices]
labels = dict(choices)
start_from = st.selectbox(
    "Start from", values, index=values.index(learner.start_from) if learner.start_from in values else 0,
    format_func=lambda value: labels[value], key="train_start_from",
    help="Transfer learning: continue a registered version instead of starting a fresh adapter on the base model.",
)
METHOD_LABELS = {"sft": "SFT — learn the well-rated answers",
                 "dpo": "DPO — prefer the better of two answers (ratings and Compare votes)",
                 "kto": "KTO — good and bad answers, unpaired", "auto": "auto — DPO once there are enough pairs"}
method = st.selectbox(
    "Method", [learner.method] + [m for m in TRAINING_METHODS if m != learner.method], key="train_method",
    format_func=lambda m: METHOD_LABELS[m] + (" (configured)" if m == learner.method else ""),
    help="Votes in Chat's Compare mode train the learner through DPO (preference pairs) and KTO (both bad).",
)
start_col, cancel_col = st.columns([1, 1])
if not can("train"):
    not_allowed("Train now", "train")
elif start_col.button("🚀 Train now", type="primary", key="train_start", disabled=not learner.learning_enabled):
    try:
        system.start_training(user=current_user(), start_from=start_from,
                              method=None if method == learner.method else method)
        st.toast("Training started")
    except (JobAlreadyRunning, NotEnoughData, PermissionDenied, RuntimeError, ValueError) as exc:
        st.warning(str(exc))  # StartError is a ValueError
if not learner.learning_enabled:
    st.info("Learning is switched off (models.deepseek.learning_enabled: false).", icon="ℹ️")


# -- render: live progress ---------------------------------------------------------------------
@st.fragment(run_every=system.config.ui.progress_refresh_s)
def live_progress() -> None:
    snapshot = system.training_status()
    if snapshot is None or snapshot.run_id is None:
        st.info("No training has run in this server yet. Rate some answers, then press Train now.", icon="ℹ️")
        return
    total = max(int(snapshot.total_steps or 0), 1)
    step = int(snapshot.step or 0)
    label = f"Run {snapshot.run_id}: {snapshot.state} — step {step}/{snapshot.total_steps or '?'}"
    st.progress(min(step / total, 1.0), text=label)
    if snapshot.message:
        (st.error if snapshot.state == "failed" else st.caption)(snapshot.message)
    if snapshot.state in ("queued", "running") and can("cancel"):
        if st.button("⏹ Cancel", key="train_cancel"):
            try:
                system.cancel_training(user=current_user())
                st.toast("Cancelling after the current step…")
            except PermissionDenied as exc:
                st.warning(str(exc))
    if snapshot.events:
        st.plotly_chart(loss_figure(snapshot.events, title="Live loss"), key="train_live_loss")
    # When a run ends, redraw the whole page once so the run list and the served version agree.
    was_active = st.session_state.get("train_was_active", False)
    st.session_state.train_was_active = snapshot.state in ("queued", "running")
    if was_active and not st.session_state.train_was_active:
        st.rerun()


live_progress()

# -- history: past runs --------------------------------------------------------------------------
st.subheader("Past runs")
runs = system.runs()
if not runs:
    st.info("No runs yet.", icon="ℹ️")
else:
    st.dataframe(runs_table(runs), hide_index=True, width="stretch", key="train_runs")

# -- model versions: promote by hand, roll back in one click ---------------------------------
st.subheader("Model versions")
versions = system.versions_table()
st.dataframe(versions, hide_index=True, width="stretch", key="train_versions")
gated = [v for v in system.version_ids() if system.gate_record(v)]
if gated:
    with st.expander("Gate evidence: why a version was served or not", expanded=False):
        shown = st.selectbox("Version", list(reversed(gated)), key="train_gate_version")
        gate = system.gate_record(shown) or {}
        st.caption(
            f"{shown} against {gate.get('champion')}: {'passed' if gate.get('passed') else 'not passed'}. "
            f"Answers from {gate.get('runtime') or 'the served runtime'} ({gate.get('decoding') or '-'}); "
            "losses from the transformers model."
        )
        st.dataframe(gate_checks_table(gate), hide_index=True, width="stretch", key="train_gate_checks")
        changes = gate_answer_changes(gate)
        if not changes.empty:
            st.markdown("**General questions whose answer changed**")
            st.dataframe(changes, hide_index=True, width="stretch", key="train_gate_changes")
        rated = gate_rated_answers(gate)
        if not rated.empty:
            st.markdown("**Rated answers, asked again**")
            st.dataframe(rated, hide_index=True, width="stretch", key="train_gate_rated")
if not can("promote"):
    not_allowed("Serving another version or rolling back", "promote")
    st.stop()
pick_col, promote_col, rollback_col = st.columns([2, 1, 1])
choice = pick_col.selectbox("Version", list(versions["version"]), key="train_version_pick")
if promote_col.button("Serve this version", key="train_promote", disabled=choice == system.served_version()):
    try:
        system.promote(choice, user=current_user())
        st.rerun()
    except (RegistryError, PermissionDenied) as exc:
        st.warning(str(exc))
if rollback_col.button("↩️ Roll back", key="train_rollback", help="Serve the version that was served before"):
    try:
        system.roll_back(user=current_user())
        st.rerun()
    except (RegistryError, PermissionDenied) as exc:
        st.warning(str(exc))
