"""Blind-vote strengths per Insights topic: the topic boards and topic-aware routing by votes,
on the real offline MiniLM embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmac_core.config import LeaderboardConfig
from dmac_core.insights.embeddings import MiniLMEmbedder
from dmac_core.insights.routing import TopicRouter
from dmac_core.insights.topics import fit_topics
from dmac_core.logs.store import LearningStore
from dmac_core.signals.leaderboard import leaderboards_by_topic, vote_sides
from tests.test_insights import TOPICS


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> MiniLMEmbedder:
    return MiniLMEmbedder(tmp_path_factory.mktemp("emb"))


def plant_votes(store: LearningStore) -> None:
    """Gemini wins the blind votes on capitals, the learner's v0001 wins them on bread; python
    prompts are answered but never voted on."""
    for topic, prompts in TOPICS.items():
        for prompt in prompts:
            for round_ in range(2):
                a = store.append_interaction(model="deepseek", model_version="v0001", prompt=prompt,
                                             response=f"learner {round_} {prompt}").id
                b = store.append_interaction(model="gemini", prompt=prompt, response=f"gemini {round_} {prompt}").id
                if topic == "code":
                    continue
                store.append_vote(user="ana", prompt=prompt, interaction_a=a, interaction_b=b, model_a="deepseek",
                                  model_b="gemini", version_a="v0001", choice="b" if topic == "geo" else "a")


def test_topic_boards_and_topic_aware_routing_follow_each_topics_votes(embedder: MiniLMEmbedder,
                                                                       tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    plant_votes(store)
    model = fit_topics(store, embedder)
    assert model is not None
    boards = leaderboards_by_topic(vote_sides(store.votes()), lambda p: model.assign(embedder.embed(p)), model.label,
                                   LeaderboardConfig(min_votes=5, bootstrap_samples=100))
    assert len(boards) == 2  # python prompts got no votes
    winners = {label: board.table["entry"].iloc[0] for label, board in boards.items()}
    assert [w for label, w in winners.items() if "capital" in label] == ["gemini"]
    assert [w for label, w in winners.items() if "bread" in label] == ["deepseek@v0001"]
    assert all(board.n_votes == 8 for board in boards.values())

    router = TopicRouter(store, embedder, refresh_s=0)
    overall = {"gemini": (0.0, 16), "deepseek": (0.0, 16)}  # even overall: only the topic decides
    order = ["gemini", "deepseek"]
    ranked, note = router.rank(order, "What is the capital of Germany?", overall, 3, by="votes", served_version="v0001")
    assert ranked == ["gemini", "deepseek"] and "gemini strength" in note and "(n=8)" in note
    ranked, _ = router.rank(order, "How do I knead bread dough?", overall, 3, by="votes", served_version="v0001")
    assert ranked == ["deepseek", "gemini"]
    # a newly served version has no votes on the topic: the learner goes after every rated model
    ranked, _ = router.rank(order, "How do I knead bread dough?", overall, 3, by="votes", served_version="v0002")
    assert ranked == ["gemini", "deepseek"]
