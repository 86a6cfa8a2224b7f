"""Insights: topics ranked by the learner's gap, the active-learning queue and its
actions, topic-aware routing, per-token confidence, images to Gemini, and the page."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import dmac_core
from dmac_core.config import PROJECT_ROOT, Config, load_config
from dmac_core.insights import active, explain, topics
from dmac_core.insights.embeddings import MiniLMEmbedder
from dmac_core.insights.routing import TopicRouter, rank_models
from dmac_core.learner.loading import load_model
from dmac_core.learner.registry import ModelRegistry, ModelVersion
from dmac_core.logs.store import LearningStore
from dmac_core.serving import attachments as images
from dmac_core.views import insights as insight_views
from tests.conftest import tiny_config_dict, write_config
from tests.fake_servers import FakeServer

TOPICS = {
    "geo": ["What is the capital of France?", "Which city is the capital of Japan?",
            "Name the capital city of Italy.", "What is the capital of Spain?"],
    "bread": ["How do I bake sourdough bread at home?", "Why did my bread dough not rise?",
              "How long should bread dough be kneaded?", "What oven temperature is best for baking bread?"],
    "code": ["How do I reverse a list in Python?", "What does a Python dictionary comprehension look like?",
             "How do I read a file line by line in Python?", "How do I sort a Python list of tuples?"],
}


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> MiniLMEmbedder:
    """The real offline MiniLM (loaded once for the module), caching in a temp dir."""
    return MiniLMEmbedder(tmp_path_factory.mktemp("emb"))


def plant(store: LearningStore) -> None:
    """Gemini and DeepSeek-RL answer every prompt; DeepSeek-RL is rated low only on capitals."""
    for topic, prompts in TOPICS.items():
        for prompt in prompts:
            for model, rating in (("gemini", 5), ("deepseek", 1 if topic == "geo" else 5)):
                rec = store.append_interaction(model=model, prompt=prompt, response=f"{model} answer to {prompt}",
                                               messages=[{"role": "user", "content": prompt}])
                store.append_feedback(interaction_id=rec.id, rating=rating, user="ana")
                if topic == "code":  # more volume on code, all rated well: no gap, no impact
                    store.append_interaction(model="gemini", prompt=prompt, response="again")


def test_embedder_is_normalised_and_cached_on_disk(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    e = MiniLMEmbedder(tmp_path)
    v = e.embed(["How do I bake bread?", "Recipe for a sourdough loaf", "What is the capital of France?"])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # bread is nearer bread than capitals
    again = MiniLMEmbedder(tmp_path)  # a new process would start like this: everything from disk
    assert np.allclose(again.embed(["Recipe for a sourdough loaf"])[0], v[1]) and again.encoded == 0
    with open(tmp_path / "embeddings-minilm.bin", "ab") as handle:
        handle.write(b"torn")  # a killed writer's fragment is dropped, not misread
    assert again.embed(["new text"]).shape == (1, 384)
    assert (tmp_path / "embeddings-minilm.bin").stat().st_size % (32 + 384 * 4) == 0


def test_low_rated_topic_ranks_first(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    plant(store)
    table = topics.topic_table(store, embedder)
    assert len(table) == 3, table[["label", "volume"]]
    top = table.iloc[0]
    assert "capital" in top["label"]
    assert (top["best_model"], top["best_rating"], top["learner_rating"], top["gap"]) == ("gemini", 5.0, 1.0, 4.0)
    assert top["impact"] == 4.0 * top["volume"] == 32
    assert (table["gap"].iloc[1:] == 0).all()
    assert table.loc[table["label"].str.contains("python"), "volume"].item() == 16  # the busiest topic
    ratings = topics.topic_ratings(store, embedder)
    assert ratings[int(top["topic"])] == {"deepseek": (1.0, 4), "gemini": (5.0, 4)}


def test_topic_aware_ranking_moves_a_topic_to_the_learner_only_when_it_catches_up() -> None:
    order = ["gemini", "deepseek"]
    overall = {"gemini": (4.5, 40), "deepseek": (4.8, 40)}  # the learner shines elsewhere...
    assert rank_models(order, {}, overall, 3) == ["gemini", "deepseek"]  # ...but is unproven here
    assert rank_models(order, {"deepseek": (5.0, 2), "gemini": (4.5, 9)}, overall, 3)[0] == "gemini"  # too few
    assert rank_models(order, {"deepseek": (4.2, 6), "gemini": (4.5, 9)}, overall, 3)[0] == "gemini"  # behind
    assert rank_models(order, {"deepseek": (4.5, 6), "gemini": (4.5, 9)}, overall, 3)[0] == "deepseek"  # as well
    assert rank_models(order, {"deepseek": (4.0, 3)}, {"gemini": (3.0, 10)}, 3)[0] == "deepseek"


def test_topic_router_follows_ratings_as_they_catch_up(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    plant(store)
    router = TopicRouter(store, embedder, refresh_s=0)
    overall = {"gemini": (5.0, 24), "deepseek": (3.7, 12)}
    ranked, note = router.rank(["gemini", "deepseek"], "What is the capital of Germany?", overall, 3)
    assert ranked[0] == "gemini" and "deepseek 1.0 (n=4)" in note
    ranked, _ = router.rank(["gemini", "deepseek"], "How do I knead bread dough?", overall, 3)
    assert ranked[0] == "deepseek"  # rated 5 on bread, as well as gemini
    # The learner improves on capitals: newer ratings of its answers catch up with Gemini's.
    for prompt in TOPICS["geo"]:
        for _ in range(2):
            rec = store.append_interaction(model="deepseek", prompt=prompt, response=f"better {prompt}")
            store.append_feedback(interaction_id=rec.id, rating=5, user="ana")
    ranked, _ = router.rank(["gemini", "deepseek"], "What is the capital of Germany?", overall, 3)
    assert ranked[0] == "gemini"  # mean (4×1 + 8×5)/12 = 3.7 < 5: not yet
    for f in store.feedback().to_dict("records"):
        if f["rating"] == 1:  # analysts revise the old low ratings after a retrain
            store.append_feedback(interaction_id=f["interaction_id"], rating=5, user="ana")
    ranked, note = router.rank(["gemini", "deepseek"], "What is the capital of Germany?", overall, 3)
    assert ranked[0] == "deepseek", note


def queue_store(tmp_path: Path) -> LearningStore:
    store = LearningStore(tmp_path, fsync=False)
    low = store.append_interaction(model="deepseek", prompt="Summarise the Q3 risk report.", response="Risk.")
    store.append_feedback(interaction_id=low.id, rating=1, user="ana")
    store.append_interaction(model="gemini", prompt="Who wrote Hamlet?", response="William Shakespeare wrote Hamlet.")
    store.append_interaction(model="deepseek", prompt="Who wrote Hamlet?", response="Bananas grow on large tropical plants.")
    store.append_interaction(model="gemini", prompt="What is 2 + 2?", response="2 + 2 equals 4.")
    store.append_interaction(model="deepseek", prompt="What is 2 + 2?", response="2 + 2 equals 4.")
    store.append_interaction(model="deepseek", prompt="Explain quantum chromodynamics.", response="Gluons, maybe?")
    store.append_interaction(model="deepseek", prompt="Say hello.", response="Hello!")
    good = store.append_interaction(model="deepseek", prompt="Name a colour.", response="Red.")
    store.append_feedback(interaction_id=good.id, rating=2, user="ana")
    store.append_feedback(prompt="Name a colour.", response="Blue.", rating=5, user="ana")  # resolved
    return store


def test_queue_holds_uncertain_disagreeing_and_low_rated_prompts(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    store = queue_store(tmp_path)
    entropies = {"Explain quantum chromodynamics.": 4.5}  # the planted uncertain learner answer
    queue = active.build_queue(store, embedder, entropy_fn=lambda row: entropies.get(row["prompt"], 0.8))
    reasons = {item.prompt: set(item.reasons) for item in queue}
    assert reasons == {
        "Summarise the Q3 risk report.": {"low rating"},
        "Who wrote Hamlet?": {"disagree"},
        "Explain quantum chromodynamics.": {"uncertain"},
    }
    frame = insight_views.queue_frame(queue)
    assert list(frame["prompt"]) == [i.prompt for i in queue] and frame["score"].is_monotonic_decreasing


def test_working_items_writes_training_records(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    store = queue_store(tmp_path)
    queue = {i.prompt: i for i in active.build_queue(store, embedder)}
    record = active.work_item(store, queue["Summarise the Q3 risk report."], "answer",
                              answer="Q3 risk rose on FX exposure.", user="bo")
    row = store.records("feedback")[-1]
    assert (row["prompt"], row["response"], row["correction"], row["rating"], row["user"]) == (
        "Summarise the Q3 risk report.", "Q3 risk rose on FX exposure.", "Q3 risk rose on FX exposure.", 5, "bo")
    assert record.id == row["id"]
    hamlet = queue["Who wrote Hamlet?"]
    target = next(a for a in hamlet.answers if a["model"] == "gemini")
    active.work_item(store, hamlet, "rate", rating=5, interaction_id=target["interaction_id"], user="bo")
    assert store.records("feedback")[-1]["interaction_id"] == target["interaction_id"]
    left = {i.prompt for i in active.build_queue(store, embedder)}
    assert left == set()  # both now have something good to learn from; nothing else was flagged
    with pytest.raises(active.WorkError):
        active.work_item(store, hamlet, "answer", answer="  ")


def test_teacher_answer_goes_through_the_router_and_becomes_a_reference(
    embedder: MiniLMEmbedder, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeServer("gemini", default_text="Shakespeare wrote Hamlet around 1600.") as server:
        system = gemini_system(tmp_path, tiny_model_dir, server, monkeypatch, caps={"requests_per_day": 3})  # 2 planted + 1
        store = queue_store(system.config.data_path)
        item = next(i for i in active.build_queue(store, embedder) if i.prompt == "Who wrote Hamlet?")
        teacher = active.premium_model(system.config)
        assert teacher == "gemini"
        record = active.work_item(store, item, "teacher", manager=system.model_manager, teacher=teacher, user="bo")
        assert len(server.requests) == 1
        interaction = store.get_interaction(record.interaction_id)
        assert interaction["model"] == "gemini" and interaction["session_id"] == "active-learning"
        assert (record.rating, record.response) == (5, "Shakespeare wrote Hamlet around 1600.")
        assert record.user == "teacher:gemini" and "asked for by bo" in record.feedback  # not bo's own 5
        assert interaction["user"] == "bo"  # who asked
        from dmac_core.serving.router import RoutingError

        with pytest.raises(RoutingError, match="3/3 requests today"):  # the cap holds
            active.work_item(store, item, "teacher", manager=system.model_manager, teacher=teacher)
        assert len(server.requests) == 1


def test_token_entropy_and_confidence_on_a_tiny_model(tiny_model_dir: Path) -> None:
    loaded = load_model(tiny_model_dir, ModelVersion("base", None), dtype=__import__("torch").float32)
    scores = explain.answer_token_scores(loaded, "Say hello.", "Hello there, friend!")
    assert [s.token for s in scores] and "".join(s.token for s in scores).strip() == "Hello there, friend!"
    vocab = len(loaded.tokenizer)
    assert all(0 < s.prob <= 1 and 0 <= s.entropy <= math.log(vocab) + 1e-3 for s in scores)
    flat = explain.mean_token_entropy(loaded, "Say hello.", "Hello there, friend!")
    # Sharper logits (a larger final norm) must mean lower entropy: the measure follows the model.
    with __import__("torch").no_grad():
        loaded.model.model.norm.weight.mul_(50.0)
    assert explain.mean_token_entropy(loaded, "Say hello.", "Hello there, friend!") < flat - 1.0
    grid, probs = insight_views.confidence_frame(scores, per_row=4)
    assert grid.shape[1] == 4 and probs.shape == grid.shape
    assert probs.to_numpy().ravel()[: len(scores)].tolist() == pytest.approx([s.prob for s in scores])


@pytest.mark.integration
def test_real_model_is_less_sure_of_nonsense(real_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(real_model_dir, ModelVersion("base", None), dtype=__import__("torch").float32)
    fluent = explain.mean_token_entropy(loaded, "What is the capital of France?", "The capital of France is Paris.")
    odd = explain.mean_token_entropy(loaded, "What is the capital of France?", "zq vortex 7 ## plim plam?? xr")
    print(f"mean token entropy: fluent {fluent:.2f}, nonsense {odd:.2f} nats")
    assert fluent < active.UNCERTAIN_ABOVE < odd, (fluent, odd)


def test_nearest_training_examples_follow_the_version_lineage(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    store = LearningStore(tmp_path, fsync=False)
    used = [store.append_feedback(prompt=p, response=f"answer {p}", rating=5) for p in TOPICS["bread"] + TOPICS["geo"]]
    registry = ModelRegistry(tmp_path / "models")
    source = tmp_path / "adapter"
    source.mkdir()
    version = registry.register(source, {"lineage": {"feedback_ids": [f.id for f in used[:6]]}})
    near = explain.nearest_training_examples(store, registry, version.id, "How do I knead bread?", embedder, k=3)
    assert len(near) == 3 and all("bread" in p.lower() or "dough" in p.lower() for p in near["prompt"])
    assert near["similarity"].is_monotonic_decreasing
    assert explain.nearest_training_examples(store, registry, "base", "x", embedder).empty

    # A version continued from that one (transfer) inherits its examples; its run's replayed
    # answers of the base model are listed too, marked as such.
    run_dir = tmp_path / "runs" / "r2"
    run_dir.mkdir(parents=True)
    replayed = {"prompt": [{"role": "user", "content": "What is the capital of Italy?"}],
                "completion": [{"role": "assistant", "content": "Rome."}], "replay": True}
    (run_dir / "data.json").write_text(json.dumps({"sft_train": [replayed]}))
    child = registry.register(source, {"run_id": "r2", "parent_version": version.id,
                                       "lineage": {"feedback_ids": [used[-1].id], "replay": {"prompts": ["x"]}}})
    near = explain.nearest_training_examples(store, registry, child.id, "How do I knead bread?", embedder, k=20)
    sources = dict(zip(near["prompt"], near["source"]))
    assert len(near) == 8 and sources["What is the capital of Italy?"] == "replay (base model's own answer)"
    assert sources[TOPICS["geo"][-1]].startswith("feedback ")
    assert all(sources[p].startswith(f"{version.id}: feedback ") for p in (TOPICS["bread"] + TOPICS["geo"])[:6])


# -- images ---------------------------------------------------------------------------------------
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def test_image_store_by_hash_and_refusals(tmp_path: Path) -> None:
    ref = images.store_image(tmp_path, PNG)
    assert ref.endswith(".png") and (tmp_path / "images" / ref).read_bytes() == PNG
    assert images.store_image(tmp_path, PNG) == ref  # idempotent
    assert images.load_image(tmp_path, ref) == (PNG, "image/png")
    with pytest.raises(images.ImageError):
        images.store_image(tmp_path, b"%PDF-1.7 not an image")
    with pytest.raises(images.ImageError):
        images.image_path(tmp_path, "../../etc/passwd")
    assert not images.image_support(object(), "DeepSeek-RL").ok
    assert "cannot take images" in images.image_support(object(), "DeepSeek-RL").reason


def test_image_parts_round_trip_through_fake_gemini(tmp_path: Path) -> None:
    from google import genai
    from google.genai import types

    ref = images.store_image(tmp_path, PNG)
    parts = [types.Part(text="What is in this picture?")] + images.gemini_image_parts(tmp_path, [ref])
    with FakeServer("gemini", default_text="A single pixel.") as server:
        client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=server.url))
        reply = client.models.generate_content(model="gemini-2.5-pro", contents=[types.Content(role="user", parts=parts)])
        assert reply.text == "A single pixel."
        sent = server.requests[0].body["contents"][0]["parts"]
    inline = sent[1].get("inlineData") or sent[1].get("inline_data")
    assert inline["mimeType" if "mimeType" in inline else "mime_type"] == "image/png"
    assert base64.b64decode(inline["data"]) == PNG


def test_image_through_router_is_sent_and_linked(tmp_path: Path, tiny_model_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: an image goes through the router to Gemini and is linked from the record."""
    from dmac_core.backends.gemini import GeminiBackend

    assert GeminiBackend.accepts_images
    from dmac_core.serving.router import RoutingError

    with FakeServer("gemini", default_text="A single pixel.") as server:
        system = gemini_system(tmp_path, tiny_model_dir, server, monkeypatch)
        ref = images.store_image(system.config.data_path, PNG)
        messages = [{"role": "user", "content": "What is in this picture?", "images": [ref]}]
        result = system.model_manager.respond(messages, model="auto")
        assert result.model == "gemini" and "deepseek: " in result.route_reason  # the learner was passed over
        inline = server.requests[0].body["contents"][-1]["parts"][1]["inlineData"]
        assert base64.b64decode(inline["data"]) == PNG
        record = system.store.get_interaction(result.interaction_id)
        assert record["images"] == [ref] and record["messages"][-1]["images"] == [ref]
        with pytest.raises(RoutingError, match="cannot take images"):
            system.model_manager.respond(messages, model="deepseek")


def gemini_system(tmp_path: Path, tiny_model_dir: Path, server: FakeServer, monkeypatch: pytest.MonkeyPatch,
                  caps: dict[str, Any] | None = None) -> Any:
    from dmac_core.system import LearningSystem

    data = tiny_config_dict(tmp_path / "data", tiny_model_dir)
    data["models"]["gemini"] = {"kind": "gemini", "base_url": server.url, "max_retries": 0}
    data["routing"] = {"strategy": "priority", "order": ["deepseek", "gemini"], "exploration": 0.0}
    if caps:
        data["routing"]["caps"] = {"gemini": caps}
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("DMAC_SECRETS", str(tmp_path / "no-secrets.toml"))
    return LearningSystem(load_config(write_config(tmp_path / "config.yaml", data)))


# -- the page ---------------------------------------------------------------------------------
def test_insights_page_empty_state_then_topics_queue_and_explanations(app_env: Config) -> None:
    at = AppTest.from_file(str(PROJECT_ROOT / "pages" / "insights.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert any("No prompts yet — chat first" in i.value for i in at.info)

    store = LearningStore(app_env.data_path, fsync=False)
    plant(store)
    store.append_interaction(model="deepseek", prompt="Summarise the Q3 risk report.", response="Risk <b>x</b>.",
                             model_version="base", route_reason="auto/priority: deepseek")
    low = store.records("interactions")[-1]
    store.append_feedback(interaction_id=low["id"], rating=1)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value  # the topics table
    assert "capital" in table.iloc[0]["label"]
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "capital" in chart["data"][0]["x"][0]
    queue = at.dataframe[1].value  # the queue
    assert "Summarise the Q3 risk report." in set(queue["prompt"])
    pick = list(queue["prompt"]).index("Summarise the Q3 risk report.")
    at.selectbox(key="ins_queue_pick").set_value(pick).run()
    at.text_area(key="ins_answer").input("Q3 risk rose on FX exposure.").run()
    at.button(key="ins_answer_save").click().run()
    assert not at.exception, at.exception
    assert store.records("feedback")[-1]["correction"] == "Q3 risk rose on FX exposure."
    # Explanations: the newest learner answer, its routing reason, and its shaded tokens once the
    # version that wrote it (the base) has scored it in the background.
    assert any("auto/priority: deepseek" in c.value for c in at.caption)
    assert dmac_core.get_learning_system().confidence.wait(120)
    at.run()
    assert any(c.value.startswith("Per-token confidence of version base, the one that wrote this answer")
               for c in at.caption)
    tokens = at.dataframe[-1].value  # the shaded tokens of "Risk <b>x</b>.", as text
    assert "Risk" in "".join(str(cell) for cell in tokens.to_numpy().ravel())
    assert not any("<b>" in m.value and m.allow_html for m in at.markdown)


def test_router_sends_a_topic_to_the_learner_once_rated_there(
    embedder: MiniLMEmbedder, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ModelManager with ``routing.topic_aware``."""
    from dmac_core.config import RoutingConfig

    assert "topic_aware" in RoutingConfig.model_fields
    from dmac_core.insights.routing import TopicRouter

    with FakeServer("gemini", default_text="Gemini says hi.") as server:
        system = gemini_system(tmp_path, tiny_model_dir, server, monkeypatch)
        system.config.routing.strategy = "best_rated"
        system.config.routing.topic_aware = True
        system.config.routing.best_rated_min_samples = 3
        plant(system.store)
        system.model_manager.topic_router = TopicRouter(system.store, embedder, refresh_s=0)
        capitals = system.model_manager.respond("What is the capital of Germany?")
        assert capitals.model == "gemini" and "topic" in capitals.route_reason
        bread = system.model_manager.respond("How do I knead bread dough?")
        assert bread.model == "deepseek", bread.route_reason
