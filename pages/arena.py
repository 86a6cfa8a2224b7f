"""Chat's Compare mode: two models answer one question blind as A and B; the analyst votes.

Not a page of its own: ``pages/chat.py`` calls :func:`compare_mode` when the mode switch says
"Compare". Which model wrote which answer stays on the server until the vote is saved.
"""

from __future__ import annotations

import streamlit as st

from dmac_core.system import ArenaError, LearningSystem, RecordError, RoutingError
from dmac_core.views.inert import inert_markdown
from pages.common import can, current_user, not_allowed

CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie — equally good", "both_bad": "Both are bad"}
RANDOM = "random"


def _pick_contestants(system: LearningSystem) -> list[str] | None:
    """The two contestants the analyst chose, or None when the pair is drawn at random."""
    how = st.radio("Contestants", [RANDOM, "choose"], horizontal=True, key="arena_how",
                   format_func=lambda v: "Two at random (blind)" if v == RANDOM else "I choose the two")
    if how == RANDOM:
        return None
    pool = system.arena_contestants(every_version=True)
    left, right = st.columns(2)
    first = left.selectbox("One", pool, key="arena_first", format_func=system.arena_label)
    second = right.selectbox("The other", pool, index=min(1, len(pool) - 1), key="arena_second",
                             format_func=system.arena_label)
    st.caption("Which of the two answers as A is drawn at random, so the vote stays blind.")
    return [first, second]


def _ask(system: LearningSystem, prompt: str, chosen: list[str] | None) -> None:
    """Both contestants answer; the round (names included) is kept in the session, not shown."""
    try:
        if chosen is not None and chosen[0] == chosen[1]:
            raise ArenaError("Pick two different contestants.")
        pair = system.arena_pair(chosen)
        with st.spinner("Both models are answering… (the local model loads on first use)"):
            round_ = system.arena_answer(prompt, pair, user=current_user(),
                                         session_id=st.session_state.chat_session_id)
    except (ArenaError, RoutingError, ValueError) as exc:
        st.error(str(exc))
        return
    st.session_state.arena_round = {
        "prompt": prompt,
        "sides": {side: {"contestant": name, "text": result.text, "interaction_id": result.interaction_id,
                         "finish_reason": result.finish_reason}
                  for side, name, result in (("a", round_.contestant_a, round_.a), ("b", round_.contestant_b, round_.b))},
        "vote": None,
    }


def _vote_controls(system: LearningSystem, round_: dict) -> None:
    sides = round_["sides"]
    key = sides["a"]["interaction_id"]
    choice = st.radio("Which answer is better?", list(CHOICES), index=None, horizontal=True,
                      format_func=CHOICES.get, key=f"arena_choice_{key}")
    note = st.text_input("Why (optional)", key=f"arena_note_{key}", placeholder="What made the difference?")
    if st.button("Submit vote", key=f"arena_submit_{key}", disabled=choice is None):
        try:
            system.vote(sides["a"]["interaction_id"], sides["b"]["interaction_id"], str(choice), note,
                        user=current_user())
        except RecordError as exc:
            st.error(str(exc))
        else:
            round_["vote"] = choice
            st.rerun()


def compare_mode(system: LearningSystem) -> None:
    """Draw the Compare mode: the contestants, the question box, the blind answers and the vote."""
    st.caption("Two models answer the same question side by side as A and B, names hidden. Your vote teaches "
               "DeepSeek-RL at the next training: the better answer is preferred over the other; "
               "\"both bad\" marks both as answers to avoid; a tie teaches nothing.")
    if not can("chat"):
        not_allowed("Comparing answers", "chat")
        return
    chosen = _pick_contestants(system)
    prompt = st.chat_input("Ask both models a question…", key="arena_input")
    if prompt is not None:
        if not prompt.strip():
            st.warning("The question is empty: type something first.")
        else:
            _ask(system, prompt, chosen)
    round_ = st.session_state.get("arena_round")
    if not round_:
        st.info("Type a question below: two models answer it, you pick the better one.", icon="ℹ️")
        return
    st.markdown(f"**Question:** {inert_markdown(round_['prompt'])}")
    voted = round_["vote"]
    for column, side in zip(st.columns(2), ("a", "b")):
        answer = round_["sides"][side]
        with column.container(border=True):
            st.markdown(f"**{side.upper()}**"
                        + (f" — {system.arena_label(answer['contestant'])}" if voted else ""))
            st.markdown(inert_markdown(answer["text"]) or "_(empty answer)_")
            if answer["finish_reason"] in ("length", "repetition"):
                st.caption("✂️ Cut short (token limit or loop guard).")
    if voted:
        a, b = (system.arena_label(round_["sides"][s]["contestant"]) for s in ("a", "b"))
        st.success(f"✓ Vote saved: {CHOICES[voted]}. A was {a}, B was {b}.")
    elif can("vote"):
        _vote_controls(system, round_)
    else:
        not_allowed("Voting", "vote")
