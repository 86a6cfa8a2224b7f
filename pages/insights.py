"""Insights: where DeepSeek-RL falls behind (topics), what analysts should look at next
(the active-learning queue), and why an answer came out as it did (explanations)."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from dmac_core.system import RecordError, RoutingError, WorkError
from dmac_core.views.inert import inert_markdown
from dmac_core.views.insights import confidence_frame, queue_frame
from pages.common import can, current_user, not_allowed, services, show_log_health

system = services()


def shade(probs: pd.DataFrame):  # type: ignore[no-untyped-def]
    """CSS per cell from the probability alone (red = unsure, green = sure): model text is
    shown as plain cell text, never as HTML."""

    def css(p: float) -> str:
        if pd.isna(p):
            return ""
        return f"background-color: rgb({int(230 - 120 * p)}, {int(120 + 110 * p)}, 120); color: black"

    return probs.map(css)


# -- title, guard ------------------------------------------------------------------------------
st.title("🔎 Insights")
st.caption("Where DeepSeek-RL falls behind, what to teach it next, and why it answered as it did.")
show_log_health(system)
if not system.has_prompts():
    st.info("No prompts yet — chat first, then come back: topics, the learning queue and explanations appear here.",
            icon="ℹ️")
    st.stop()
topics_tab, queue_tab, explain_tab = st.tabs(["📊 Topics", "🎯 Learning queue", "🔬 Explain"])

# -- topics ------------------------------------------------------------------------------------
with topics_tab:
    with st.spinner("Grouping prompts into topics…"):
        table = system.topics()
    st.caption("Gap = best model's mean rating − DeepSeek-RL's on the topic; impact = gap × volume.")
    ranked = table.dropna(subset=["impact"])
    if ranked.empty:
        st.info("No topic has ratings of DeepSeek-RL and another model yet — rate answers of both to see gaps.",
                icon="ℹ️")
    else:
        chart = px.bar(ranked, x="label", y="impact", color="gap", hover_data=["volume", "best_model"],
                       labels={"label": "topic"}, title="Where DeepSeek-RL falls behind (impact)")
        st.plotly_chart(chart, key="ins_topics_chart")
    st.dataframe(table, hide_index=True, key="ins_topics_table")

# -- the active-learning queue -------------------------------------------------------------------
with queue_tab:
    score_entropy = st.toggle("Score DeepSeek-RL's uncertainty (each answer by the version that wrote it, "
                              "in the background between chat answers)", value=True, key="ins_entropy")
    items, pending = system.learning_queue(score_uncertainty=score_entropy)
    if pending:
        st.caption(f"Scoring the uncertainty of {pending} answer(s) in the background; reload to include them.")
    if not items:
        st.info("The queue is empty: every prompt has a good answer or a correction to learn from.", icon="✅")
    else:
        st.dataframe(queue_frame(items), hide_index=True, key="ins_queue_table")
        index = st.selectbox("Work on", range(len(items)), format_func=lambda i: items[i].prompt[:90],
                             key="ins_queue_pick")
        item = items[index]
        st.markdown(f"**Why:** {inert_markdown(item.reason_text)}")
        for answer in item.answers:
            with st.container(border=True):
                st.caption(f"{answer['model'] or 'no model (imported)'} · rating "
                           f"{'—' if pd.isna(answer['rating']) else answer['rating']}")
                st.markdown(inert_markdown(answer["response"]))
        teacher = system.premium_model()
        if not can("review"):
            not_allowed("Answering, rating or asking a teacher", "review")
        else:
            mine, rate, ask = st.columns(3)
            with mine:
                text = st.text_area("Your answer (becomes a correction, rated 5)", key="ins_answer")
                if st.button("Save my answer", key="ins_answer_save"):
                    try:
                        system.work_on(item, "answer", user=current_user(), answer=text)
                        st.success("Saved as a correction: DeepSeek-RL trains on it next time.")
                    except (WorkError, RecordError) as exc:
                        st.error(str(exc))
            with rate:
                choices = item.answers
                pick = st.selectbox("Answer", range(len(choices)), key="ins_rate_pick",
                                    format_func=lambda i: f"{choices[i]['model'] or 'imported'}: {choices[i]['response'][:40]}")
                stars = st.selectbox("Rating", [5, 4, 3, 2, 1], key="ins_rate_value")
                if st.button("Save rating", key="ins_rate_save"):
                    try:
                        system.work_on(item, "rate", user=current_user(), rating=int(stars),
                                       interaction_id=choices[pick]["interaction_id"])
                        st.success(f"Rated {stars}/5.")
                    except (WorkError, RecordError) as exc:
                        st.error(str(exc))
            with ask:
                label = system.display_name(teacher) if teacher else "premium model"
                st.caption(f"Ask {label} and keep its answer as a reference (its usage caps apply).")
                if st.button(f"Ask {label}", key="ins_teacher", disabled=teacher is None):
                    try:
                        with st.spinner(f"Asking {label}…"):
                            record = system.work_on(item, "teacher", user=current_user(), teacher=teacher)
                        st.success(f"{label} answered; saved as its reference, rated {record.rating}/5 under {record.user} (not as your rating).")
                        st.markdown(inert_markdown(record.response))
                    except (WorkError, RoutingError, RecordError, ValueError) as exc:
                        st.error(str(exc))

# -- explanations --------------------------------------------------------------------------------
with explain_tab:
    rows = system.learner_answers(limit=50)
    if not rows:
        st.info("No DeepSeek-RL answers yet — chat with it to see per-token confidence.", icon="ℹ️")
    else:
        chosen = st.selectbox("Answer", range(len(rows)), format_func=lambda i: rows[i]["prompt"][:90],
                              key="ins_explain_pick")
        row = rows[chosen]
        version = row["model_version"] or "base"
        st.caption(f"Version {version} · routing: {row['route_reason']}")
        scores, failure = system.confidence_of(row)
        if scores is None:
            if failure:
                st.warning(f"No confidence: version {version}, which wrote this answer, cannot be loaded ({failure}).")
            else:
                st.caption(f"Computing per-token confidence with version {version} (the one that wrote this answer) "
                           "in the background, between chat answers; reload in a moment.")
        else:
            if scores:
                grid, probs_grid = confidence_frame(scores)
                st.caption(f"Per-token confidence of version {version}, the one that wrote this answer (its fp32 "
                           "weights, teacher-forced): green = it was sure of this token, red = it was not.")
                st.dataframe(grid.style.apply(lambda _: shade(probs_grid), axis=None), hide_index=True,
                             key="ins_explain_tokens")
                probs = pd.DataFrame({"position": range(len(scores)), "token": [s.token for s in scores],
                                      "probability": [s.prob for s in scores]})
                st.plotly_chart(px.bar(probs, x="position", y="probability", hover_data=["token"],
                                       range_y=[0, 1], title="Token probabilities"), key="ins_explain_chart")
        try:
            near = system.nearest_examples(version, row["prompt"])
        except Exception as exc:  # noqa: BLE001 - an unreadable version must not break the page
            near = pd.DataFrame()
            st.warning(f"Could not read version {version}: {exc}")
        st.subheader("Nearest training examples of this version")
        if near.empty:
            st.caption("None: this answer came from the base model (or a version without recorded training data).")
        else:
            st.dataframe(near, hide_index=True, key="ins_explain_near")
