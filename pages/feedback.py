"""Feedback review: every logged answer with its ratings and notes; fix a rating or write a
corrected answer in place, rate a filtered selection in bulk, see who rated what."""

from __future__ import annotations

import streamlit as st

from dmac_core.system import RecordError
from dmac_core.views.csv_export import csv_bytes
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

# -- guard: empty state ----------------------------------------------------------------------
if table.empty:
    st.info("No answers logged yet — chat on the Chat page and rate a few answers.", icon="ℹ️")
    st.stop()

# -- inputs ----------------------------------------------------------------------------------
left, middle, right, far = st.columns(4)
models = left.multiselect("Model", sorted(table["model"].dropna().unique()), key="fb_models")
months = middle.multiselect("Month", sorted(table["month"].dropna().unique(), reverse=True), key="fb_months")
ratings = right.multiselect("Rating", [5, 4, 3, 2, 1, "unrated"], key="fb_ratings")
purposes = far.multiselect("Asked for", list(PURPOSES), default=["chat"], key="fb_purposes",
                           help="chat: analysts' questions; evaluation: answers to test sets and comparisons; "
                                "teacher: rewrites of commented answers before training. Only rated answers "
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
