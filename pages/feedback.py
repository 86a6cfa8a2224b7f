"""Feedback: every logged answer with its ratings and notes, filterable and downloadable."""

from __future__ import annotations

import streamlit as st

from dmac_core.review import filter_review, rating_summary, review_table
from pages.common import services, show_log_health

system = services()

# -- title, state ---------------------------------------------------------------------------
st.title("⭐ Feedback")
st.caption("What analysts rated, with their notes. Ratings of 4–5 become training targets for DeepSeek-RL.")
show_log_health(system)
table = review_table(system.store)

# -- guard: empty state ----------------------------------------------------------------------
if table.empty:
    st.info("No answers logged yet — chat on the Chat page and rate a few answers.", icon="ℹ️")
    st.stop()

# -- inputs ----------------------------------------------------------------------------------
left, middle, right = st.columns(3)
models = left.multiselect("Model", sorted(table["model"].dropna().unique()), key="fb_models")
months = middle.multiselect("Month", sorted(table["month"].dropna().unique(), reverse=True), key="fb_months")
ratings = right.multiselect("Rating", [5, 4, 3, 2, 1, "unrated"], key="fb_ratings")
shown = filter_review(table, models, months, ratings)

# -- render ----------------------------------------------------------------------------------
rated = shown["rating"].notna().sum()
c1, c2, c3 = st.columns(3)
c1.metric("Answers shown", len(shown))
c2.metric("Rated", int(rated))
c3.metric("Mean rating", f"{shown['rating'].dropna().astype(float).mean():.2f}" if rated else "—")
st.dataframe(
    shown,
    width="stretch",
    hide_index=True,
    column_config={
        "ts": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm"),
        "rating": st.column_config.NumberColumn("Rating", format="%d ⭐"),
        "prompt": st.column_config.TextColumn("Prompt", width="medium"),
        "response": st.column_config.TextColumn("Answer", width="large"),
    },
    key="fb_table",
)
st.download_button(
    "Download CSV", shown.to_csv(index=False).encode("utf-8"), "feedback.csv", "text/csv", key="fb_download"
)
st.subheader("Ratings per model")
st.dataframe(rating_summary(shown), hide_index=True, key="fb_summary")
