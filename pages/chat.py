"""Chat: talk to any model; rate each answer 1–5 and say why. Every turn is logged."""

from __future__ import annotations

import uuid

import streamlit as st

from dmac_core.system import AUTO, ChatResult, ImageError, RecordError, RoutingError
from dmac_core.views.inert import inert_markdown
from pages.arena import compare_mode
from pages.common import can, current_user, not_allowed, services, show_log_health

system = services()
# Shown under an answer that did not end by itself (the local learner reports why it stopped).
FINISH_NOTES = {
    "repetition": "Stopped: the answer began repeating itself (loop guard). Rate it low or correct it to teach the model.",
    "length": "Cut at the token limit (models.deepseek.max_new_tokens): the answer may be incomplete.",
}

# -- inputs ------------------------------------------------------------------------------
statuses = system.model_status()
labels = {AUTO: "Auto (routing picks)"} | {s.name: s.display_name for s in statuses}
with st.sidebar:
    choice = st.selectbox(
        "Model", [AUTO] + [s.name for s in statuses if s.available], format_func=labels.get, key="chat_model"
    )
    for s in statuses:
        if s.setup_note:
            st.info(f"{s.display_name}: {s.setup_note}", icon="🛠️")
    with st.expander("Models, usage and caps", expanded=False):
        for s in statuses:
            state = "✅ ready" if s.available and not s.cooldown_s else ("⏸️ cooling down" if s.available else "⛔ off")
            st.markdown(f"**{s.display_name}** (`{s.name}`) — {state}")
            if not s.available:
                st.caption(s.reason)
            if s.runtime:
                st.caption(f"runs on {s.runtime}")
            caps = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in s.caps.items() if v is not None)
            other = ", ".join(f"{n} {purpose}" for purpose, n in sorted(s.requests_by_purpose.items()))
            st.caption(
                f"today: {s.requests_today} requests{f' ({other})' if other else ''}, {s.tokens_today:,} tokens"
                + (f", {s.requests_in_flight} in flight" if s.requests_in_flight else "")
                + (f" · caps: {caps}" if caps else "")
            )
    st.session_state.setdefault("chat_upload_round", 0)
    attachment = st.file_uploader(
        "Attach an image to the next question (models that take images only, e.g. Gemini)",
        type=["png", "jpg", "jpeg", "webp", "gif"], key=f"chat_image_{st.session_state.chat_upload_round}",
    )
    if st.button("New chat", key="chat_new"):
        st.session_state.chat_history = []
        st.rerun()

# -- title ---------------------------------------------------------------------------------
st.title("💬 Chat")
st.caption("Ask anything. Rate answers with stars and a note: every rating teaches DeepSeek-RL at the next training.")
show_log_health(system)

# -- state -----------------------------------------------------------------------------------
st.session_state.setdefault("chat_history", [])
st.session_state.setdefault("chat_session_id", uuid.uuid4().hex)
st.session_state.setdefault("chat_saved", {})
history: list[dict] = st.session_state.chat_history

# -- mode: a conversation, or a blind comparison of two models (pages/arena.py) ----------------
if st.radio("Mode", ["Chat", "Compare"], horizontal=True, key="chat_mode",
            help="Compare: two models answer one question blind as A and B; your vote trains the learner.") == "Compare":
    compare_mode(system)
    st.stop()


# A fragment: a star, a note or "Save rating" reruns only these controls, not the whole chat
# page (its history, model status and usage panel), so the confirmation comes back at once
# even when many sessions share the server.
@st.fragment
def rating_controls(message: dict) -> None:
    """Stars, a note and "Save rating" for one answer, with the saved rating once there is one."""
    interaction_id = message["interaction_id"]
    saved = st.session_state.chat_saved.get(interaction_id)
    stars = st.feedback("stars", key=f"chat_stars_{interaction_id}")
    note = st.text_input(
        "Feedback (optional)", key=f"chat_note_{interaction_id}", placeholder="What was good, wrong or missing?"
    )
    if st.button("Save rating", key=f"chat_save_{interaction_id}", disabled=stars is None):
        try:
            system.rate(interaction_id, int(stars) + 1, note, user=current_user())
        except RecordError as exc:
            st.error(str(exc))
        else:
            st.session_state.chat_saved[interaction_id] = int(stars) + 1
            saved = int(stars) + 1
    if saved:
        st.caption(f"✓ Saved: {saved}/5")


# -- history ---------------------------------------------------------------------------------
if not history:
    st.info("No messages yet — type a question below. Answers can be rated right under them.", icon="ℹ️")
for message in history:
    with st.chat_message(message["role"], avatar="🧑‍💼" if message["role"] == "user" else "🤖"):
        st.markdown(inert_markdown(message["content"]) or "_(empty answer)_")
        for ref in message.get("images", []):
            st.image(str(system.image_file(ref)), width=240)
        if message["role"] == "assistant":
            st.caption(
                f"{labels.get(message['model'], message['model'])}"
                f"{' · version ' + message['model_version'] if message.get('model_version') else ''}"
                f" · {message['route_reason']}"
            )
            ended = FINISH_NOTES.get(message.get("finish_reason") or "")
            if ended:
                st.warning(ended, icon="✂️")
            if message.get("content") and can("rate"):
                rating_controls(message)

# -- input, guard, call, render -------------------------------------------------------------
if not can("chat"):
    not_allowed("Asking questions", "chat")
    st.stop()
prompt = st.chat_input("Ask a question…", key="chat_input")
if prompt is not None:
    if not prompt.strip():
        st.warning("The question is empty: type something first.")
        st.stop()
    question: dict = {"role": "user", "content": prompt}
    if attachment is not None:
        try:
            question["images"] = [system.attach_image(attachment.getvalue(), user=current_user())]
        except ImageError as exc:
            st.error(str(exc))
            st.stop()
    conversation = [{k: m[k] for k in ("role", "content", "images") if k in m} for m in history] + [question]
    with st.chat_message("user", avatar="🧑‍💼"):
        st.markdown(inert_markdown(prompt))
        for ref in question.get("images", []):
            st.image(str(system.image_file(ref)), width=240)
    result: dict[str, ChatResult] = {}

    def deltas():  # type: ignore[no-untyped-def]
        for item in system.chat_stream(
            conversation, model=choice, user=current_user(), session_id=st.session_state.chat_session_id
        ):
            if isinstance(item, ChatResult):
                result["final"] = item
            else:
                yield item

    with st.chat_message("assistant", avatar="🤖"):
        try:
            with st.spinner("Thinking… (the local model loads on first use)"):
                shown, text = st.empty(), ""
                for piece in deltas():  # redrawn whole, so an image split across pieces is never loaded
                    text += piece
                    shown.markdown(inert_markdown(text))
        except (RoutingError, ValueError) as exc:
            st.error(str(exc))
            st.stop()
    final = result["final"]
    history.append(question)
    if attachment is not None:
        st.session_state.chat_upload_round += 1  # a fresh uploader: the image went with this question
    history.append(
        {
            "role": "assistant",
            "content": final.text,
            "model": final.model,
            "model_version": final.model_version,
            "route_reason": final.route_reason,
            "interaction_id": final.interaction_id,
            "finish_reason": final.finish_reason,
        }
    )
    st.rerun()
