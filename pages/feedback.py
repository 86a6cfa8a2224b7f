"""Feedback review: every logged answer with its ratings and notes; fix a rating or write a
corrected answer in place, rate a filtered selection in bulk, see who rated what; second
opinions, agreement between analysts, and the LLM judge with its agreement."""

from __future__ import annotations

import streamlit as st

from dmac_core.system import RecordError
from dmac_core.views.csv_export import csv_bytes
from dmac_core.views.inert import inert_markdown
from dmac_core.views.review import PURPOSES, analyst_counts, attached_images, filter_review, rating_summary
from pages.common import can, current_user, not_allowed, services, show_log_health

system = services()

# -- title, state ---------------------------------------------------------------------------
st.title("⭐ Feedback")
st.caption(
    "What analysts rated, with their notes. Ratings of 4–5 and corrected answers become training "
    "targets for DeepSeek-RL. Edit a rating, a note or a correction in the table and press Save."
)
show_log_health(system)
table = system.review_table()
# Answers waiting for this analyst's second opinion stay out of the table (it shows the first
# rating) until they have rated them in the list just below.
waiting = system.second_opinions_for(current_user())
table = table[~table["interaction_id"].isin([item["interaction_id"] for item in waiting])]

# -- second opinions: answers another analyst rated, to rate blind -------------------------------
if waiting:
    st.subheader("Waiting for your second opinion")
    st.caption(f"{len(waiting)} answer{'s' if len(waiting) != 1 else ''} another analyst rated, sent to you for an "
               "independent rating (theirs is hidden so it does not sway yours).")
    if not can("rate"):
        not_allowed("Rating", "rate")
    for item in waiting[:10]:
        with st.container(border=True):
            st.markdown(f"**Question:** {inert_markdown(item['prompt'])}")
            st.markdown(inert_markdown(item["response"]))
            left, right = st.columns([1, 3])
            stars = left.selectbox("Your rating", [5, 4, 3, 2, 1], index=None, key=f"fb_second_{item['interaction_id']}")
            if can("rate") and right.button("Save rating", key=f"fb_second_save_{item['interaction_id']}",
                                            disabled=stars is None):
                system.rate(item["interaction_id"], int(stars), user=current_user())
                st.rerun()
# -- guard: empty state ----------------------------------------------------------------------
if table.empty:
    if not waiting:
        st.info("No answers logged yet — chat on the Chat page and rate a few answers.", icon="ℹ️")
    st.stop()

# -- inputs ----------------------------------------------------------------------------------
left, middle, right, far = st.columns(4)
models = left.multiselect("Model", sorted(table["model"].dropna().unique()), key="fb_models")
months = middle.multiselect("Month", sorted(table["month"].dropna().unique(), reverse=True), key="fb_months")
ratings = right.multiselect("Rating", [5, 4, 3, 2, 1, "unrated"], key="fb_ratings")
purposes = far.multiselect("Asked for", list(PURPOSES), default=["chat"], key="fb_purposes",
                           help="chat: analysts' questions; evaluation: answers to test sets and comparisons; "
                                "teacher: rewrites of commented answers before training; judge: the LLM judge's "
                                "calls. Only rated answers "
                                "are ever trained on.")
shown = filter_review(table, models, months, ratings, purposes)

# -- render ----------------------------------------------------------------------------------
may_review = can("review")
rated = shown["rating"].notna().sum()
c1, c2, c3 = st.columns(3)
c1.metric("Answers shown", len(shown))
c2.metric("Rated", int(rated))
c3.metric("Mean rating", f"{shown['rating'].dropna().astype(float).mean():.2f}" if rated else "—")
edited = st.data_editor(
    shown,
    width="stretch",
    hide_index=True,
    disabled=[c for c in shown.columns if not may_review or c not in ("rating", "feedback", "correction")],
    column_config={
        "ts": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
        "rating": st.column_config.NumberColumn("Rating", min_value=1, max_value=5, step=1, format="%d ⭐"),
        "prompt": st.column_config.TextColumn("Prompt", width="medium"),
        "response": st.column_config.TextColumn("Answer", width="large"),
        "feedback": st.column_config.TextColumn("Note"),
        "correction": st.column_config.TextColumn("Corrected answer", help="Becomes a preferred training target"),
        "interaction_id": None,
        "month": None,
        "images": None,
    },
    key="fb_editor",
)
save_col, bulk_col, bulk_button_col = st.columns([1, 1, 1])
if not may_review:
    not_allowed("Changing ratings", "review")
elif save_col.button("💾 Save changes", key="fb_save"):
    try:
        count = system.save_review_edits(shown, edited, current_user())
        st.success(f"Saved {count} change{'s' if count != 1 else ''} as {current_user()}.")
    except RecordError as exc:
        st.error(str(exc))
if may_review:
    bulk_value = bulk_col.selectbox("Rate all shown as", [5, 4, 3, 2, 1], key="fb_bulk_value")
    if bulk_button_col.button(f"Rate all {len(shown)} shown", key="fb_bulk"):
        st.session_state.fb_bulk_pending = (len(shown), int(bulk_value))  # asked once more before writing
pending = st.session_state.get("fb_bulk_pending") if may_review else None
if pending is not None:
    count, value = pending
    st.warning(f"Rate all {count} shown answers {value}/5 as {current_user()}? Each becomes a new rating "
               "(the earlier ones stay in the log).")
    confirm_col, cancel_col = st.columns(2)
    if confirm_col.button(f"Yes, rate {count} answers {value}/5", key="fb_bulk_confirm"):
        del st.session_state["fb_bulk_pending"]
        if count != len(shown):
            st.error("The selection changed since you asked; nothing was rated. Ask again.")
        else:
            rated = system.rate_all(shown, value, current_user())
            st.success(f"Rated {rated} answers {value}/5 as {current_user()}.")
    if cancel_col.button("Cancel", key="fb_bulk_cancel"):
        del st.session_state["fb_bulk_pending"]
        st.rerun()
st.download_button(
    "Download CSV", csv_bytes(shown), "feedback.csv", "text/csv", key="fb_download"
)

images = attached_images(shown)
if images:
    with st.expander(f"🖼️ Images attached to the shown answers ({len(images)})"):
        for prompt, ref in images:
            st.image(str(system.image_file(ref)), caption=prompt[:120], width=240)

left, right = st.columns(2)
left.subheader("Ratings per model")
left.dataframe(rating_summary(shown), hide_index=True, key="fb_summary")
right.subheader("Per analyst")
right.dataframe(analyst_counts(table), hide_index=True, key="fb_analysts")

# -- second opinions: send rated answers to a second analyst -----------------------------------
if can("assign_reviews"):
    with st.expander("Send rated answers to a second analyst"):
        st.caption("Draws answers rated by exactly one other analyst, at random, and shows them to the analyst "
                   "you pick without the first rating — so agreement between analysts can be measured.")
        raters = system.raters()
        left, middle, right = st.columns([2, 1, 1])
        assignee = left.selectbox("Analyst", raters, key="fb_second_assignee")
        count = middle.number_input("Answers", min_value=1, max_value=200, value=10, key="fb_second_count")
        if right.button("Send", key="fb_second_send", disabled=assignee is None):
            try:
                sent = system.assign_second_opinions(current_user(), str(assignee), int(count))
                st.success(f"Sent {sent} answer{'s' if sent != 1 else ''} to {assignee}."
                           + ("" if sent else " None qualifies: each needs exactly one rating, by someone else."))
            except ValueError as exc:
                st.error(str(exc))
        summary = system.second_opinion_summary()
        if not summary.empty:
            st.dataframe(summary, hide_index=True, key="fb_second_summary")

# -- agreement between analysts ------------------------------------------------------------------
st.subheader("Agreement between analysts")
agreement = system.analyst_agreement()
if agreement.items == 0:
    st.info("No answer is rated by two analysts yet, so agreement cannot be measured. Send some for a second "
            "opinion (above).", icon="ℹ️")
else:
    a1, a2, a3 = st.columns(3)
    a1.metric("Krippendorff's α (ordinal)", "—" if agreement.alpha != agreement.alpha else f"{agreement.alpha:.2f}",
              help="1 = perfect agreement, 0 = chance, below 0 = systematic disagreement")
    a2.metric("Answers rated by 2+ analysts", agreement.items)
    a3.metric("Analysts", agreement.analysts)
    if agreement.items < 30:
        st.caption(f"On {agreement.items} answers α is still rough: treat it as a hint below about 30.")
    st.dataframe(agreement.per_analyst, hide_index=True, key="fb_agreement_per_analyst",
                 column_config={"alpha_vs_others": st.column_config.NumberColumn("α vs the others", format="%.2f"),
                                "pairs": st.column_config.NumberColumn(
                                    "pairs", help="(their rating, another analyst's rating) pairs α is computed on")})

# -- the LLM judge -----------------------------------------------------------------------------------
st.subheader("LLM judge")
judge = system.config.judge
if judge.model is None:
    st.caption("No judge configured (judge.model in config/config.yaml).")
else:
    st.caption(f"{system.display_name(judge.model)} scores answers 1–5 by the rubric; its labels are trained on "
               f"only while its weighted κ with analysts is ≥ {judge.agreement_bar} on ≥ {judge.min_items} rated "
               "answers (column qualifies).")
    if not can("judge"):
        not_allowed("Asking the judge", "judge")
    else:
        choice = st.radio("Judge", ["unrated", "rated", "pairs"], horizontal=True, key="fb_judge_what",
                          format_func={"unrated": f"label up to {judge.max_items} unrated answers",
                                       "rated": f"score up to {judge.max_items} rated answers (measures agreement)",
                                       "pairs": f"compare up to {judge.max_items} voted pairs"}.get)
        if st.button("Judge now", key="fb_judge_run"):
            with st.spinner("Asking the judge…"):
                try:
                    run = system.run_judge(current_user(), choice)
                    st.success(f"{len(run.judgments)} label(s) written; {run.unparsed} replies had no readable "
                               "score or verdict (recorded as unparsed).")
                    if run.stopped:
                        st.warning(f"Stopped early: {run.stopped}")
                except ValueError as exc:
                    st.error(str(exc))
agreement_table = system.judge_agreement()
if not agreement_table.empty:
    st.dataframe(agreement_table, hide_index=True, key="fb_judge_agreement")
