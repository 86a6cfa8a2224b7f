"""Evaluation harness on the tiny random Llama (and one integration test on the bundled model)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from dmac_core.backends.local import LocalBackend
from dmac_core.config import Config, load_config
from dmac_core.evaluation.evaluator import (
    Evaluator,
    SuiteError,
    generate_batch,
    generate_batch_details,
    heldout_bucket,
    heldout_suite,
    is_heldout,
    load_suite,
    reference_loss,
)
from dmac_core.learner.registry import ModelRegistry, RegistryError
from dmac_core.logs.store import LearningStore
from tests.conftest import tiny_config_dict, write_config
from tests.fake_servers import fake_openai  # noqa: F401 - fixture

MIXED_PROMPTS = [
    "Hi",
    "Please explain, step by step and with dates, how the Roman Republic became an empire, who the first "
    "emperors were, and why historians still argue about when the western empire really ended.",
    "What is 2+2?",
    "Name three colours of the Norwegian flag and say which one covers the largest area of it.",
    "Ok?",
]
REFERENCES = ["Hello there.", "Augustus became the first emperor in 27 BC.", "4", "Red, white and blue.", "Yes."]


def local_backend(cfg: Config) -> LocalBackend:
    return LocalBackend("deepseek", cfg.learner, cfg.base_model_path(), ModelRegistry(cfg.data_path / "models"))


@pytest.fixture
def env(tiny_config: Config) -> tuple[Config, LearningStore, LocalBackend]:
    return tiny_config, LearningStore(tiny_config.data_path, fsync=False), local_backend(tiny_config)


def test_reference_loss_masks_the_prompt_and_stays_aligned_in_batches(env) -> None:
    _, _, backend = env
    loaded = backend.current()
    model, tok = loaded.model, loaded.tokenizer
    batched = reference_loss(model, tok, MIXED_PROMPTS, REFERENCES, batch_size=3)
    singles = [reference_loss(model, tok, [p], [r])["per_item"][0] for p, r in zip(MIXED_PROMPTS, REFERENCES)]
    assert [round(i["loss"], 4) for i in batched["per_item"]] == [round(i["loss"], 4) for i in singles]
    assert len({round(i["loss"], 4) for i in singles}) > 1  # the items differ, so a permutation would show

    # Only the assistant turn counts: the answer's tokens plus its end-of-turn marker, whatever the prompt.
    for item, ref in zip(batched["per_item"], REFERENCES):
        assert item["tokens"] == len(tok(ref + "<|im_end|>\n", add_special_tokens=False)["input_ids"])
    same_answer = reference_loss(model, tok, ["Hi", MIXED_PROMPTS[1]], ["Yes.", "Yes."])
    assert same_answer["per_item"][0]["tokens"] == same_answer["per_item"][1]["tokens"]
    assert batched["tokens"] == sum(i["tokens"] for i in batched["per_item"])

    # Same number as transformers' own loss with the prompt labels set to -100.
    prompt_text = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, tokenize=False)
    full_text = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}], tokenize=False
    )
    p_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    ids = p_ids + tok(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    labels = [-100] * len(p_ids) + ids[len(p_ids):]
    with torch.inference_mode():
        hf_loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
    assert batched["per_item"][2]["loss"] == pytest.approx(hf_loss, rel=1e-4)
    assert batched["per_item"][2]["perplexity"] == pytest.approx(torch.tensor(hf_loss).exp().item(), rel=1e-3)
    assert 0.0 <= batched["token_accuracy"] <= 1.0


def test_batched_generation_matches_one_at_a_time_with_mixed_lengths(env) -> None:
    _, _, backend = env
    loaded = backend.current()
    batched = generate_batch_details(loaded, MIXED_PROMPTS, max_new_tokens=6, batch_size=8)  # one mixed batch
    singles = [generate_batch(loaded, [p], max_new_tokens=6, batch_size=1)[0] for p in MIXED_PROMPTS]
    assert [r["text"] for r in batched] == singles
    # Alignment by construction: each result carries its own prompt's length.
    for prompt, result in zip(MIXED_PROMPTS, batched):
        own = loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=True
        )["input_ids"]
        assert result["tokens_in"] == len(own)
        assert 1 <= result["tokens_out"] <= 6 and result["latency_ms"] > 0
    assert len({r["tokens_in"] for r in batched}) == len(MIXED_PROMPTS)
    # the backend's own (unbatched, streaming) path gives the same greedy answer
    assert backend.generate([{"role": "user", "content": MIXED_PROMPTS[1]}], max_new_tokens=6).text == singles[1]


def test_evaluate_model_without_logged_answers_is_generation_only_and_says_so(env) -> None:
    cfg, store, backend = env
    result = Evaluator(cfg, store, {"deepseek": backend}).evaluate_model(["A question nobody asked before?", "Another one"])
    assert result["n"] == 2 and result["model"] == "deepseek" and result["model_version"] == "base"
    for item in result["per_item"]:
        assert item["has_reference"] is False and item["reference"] is None and item["reference_source"] is None
        assert isinstance(item["output"], str) and item["tokens_out"] >= 1
        assert item["rougeL"] is None and item["bleu"] is None and item["loss"] is None
    metrics = result["metrics"]
    assert metrics["n_with_reference"] == 0 and metrics["rougeL"] is None and metrics["bleu"] is None
    assert metrics["loss"] is None and metrics["tokens_out"] >= 2 and metrics["latency_ms_mean"] > 0


def test_evaluate_model_uses_the_best_rated_logged_answer(env) -> None:
    cfg, store, backend = env
    store.append_feedback(prompt="What is the office wifi?", response="It is DMac-Guest.", rating=5, ts="2025-01-01T00:00:00Z")
    store.append_feedback(prompt="What is the office wifi?", response="No idea.", rating=2, ts="2025-01-02T00:00:00Z")
    store.append_feedback(prompt="What is the office wifi?", response="Maybe DMac.", rating=4, ts="2025-01-03T00:00:00Z")
    store.append_feedback(prompt="Who runs payroll?", response="Anna.", rating=1)  # too low to be a reference
    evaluator = Evaluator(cfg, store, {"deepseek": backend})
    result = evaluator.evaluate_model(["what is the  office wifi?", "Who runs payroll?", "Given one"],
                                      references=[None, None, "A given answer."])
    wifi, payroll, given = result["per_item"]
    assert (wifi["reference"], wifi["reference_source"], wifi["has_reference"]) == ("It is DMac-Guest.", "rated 5", True)
    assert payroll["has_reference"] is False and payroll["reference"] is None
    assert (given["reference"], given["reference_source"]) == ("A given answer.", "given")
    assert result["metrics"]["n_with_reference"] == 2
    assert wifi["rougeL"] is not None and wifi["loss"] > 0 and 0 <= wifi["token_accuracy"] <= 1
    assert result["metrics"]["loss"] > 0 and result["metrics"]["reference_tokens"] > 0

    # An analyst's correction outranks every rating.
    store.append_feedback(prompt="What is the office wifi?", response="No idea.", rating=1,
                          correction="The wifi is DMac-Staff.", user="analyst")
    again = evaluator.evaluate_model(["What is the office wifi?"])
    assert again["per_item"][0]["reference"] == "The wifi is DMac-Staff."
    assert again["per_item"][0]["reference_source"] == "correction"


def test_results_are_persisted_with_exact_fields(env) -> None:
    cfg, store, backend = env
    result = Evaluator(cfg, store, {"deepseek": backend}).evaluate_model(
        [{"prompt": "Capital of France?", "reference": "Paris."}, "No reference here"], suite="smoke"
    )
    month = datetime.now(timezone.utc).strftime("%Y-%m")
    path = cfg.data_path / "evals" / f"{month}.jsonl"
    [line] = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    assert set(record) == {"schema", "id", "ts", "model", "model_version", "suite", "n", "metrics", "per_item",
                           "provider_model", "runtime", "decoding", "loss_model", "eval_key"}
    assert len(record["eval_key"]) == 64
    assert record["id"] == result["eval_id"] and record["suite"] == "smoke" and record["n"] == 2
    assert (record["model"], record["model_version"]) == ("deepseek", "base")
    # the answers came from what serves chat (the tiny config: the torch loop in fp32), with chat's decoding
    assert record["runtime"] == "torch (fp32 weights)" and record["loss_model"] == "transformers fp32"
    assert record["decoding"] == "greedy, repeat penalty 1.15 over 64 tokens, loop guard"
    assert set(record["per_item"][0]) == {
        "index", "prompt", "reference", "reference_source", "has_reference", "output", "tokens_in", "tokens_out",
        "latency_ms", "error", "finish_reason", "answer_key", "answered_by", "rouge1", "rouge2", "rougeL", "bleu",
        "key_term_recall", "loss", "perplexity", "token_accuracy", "reference_tokens",
    }
    assert record["per_item"][0]["finish_reason"] in ("stop", "length", "repetition")
    assert [i["prompt"] for i in record["per_item"]] == ["Capital of France?", "No reference here"]
    for key in ("rouge1", "rouge2", "rougeL", "bleu", "key_term_recall", "loss", "perplexity", "token_accuracy",
                "latency_ms_mean", "tokens_in", "tokens_out", "n_with_reference", "wall_s"):
        assert key in record["metrics"]
    assert store.evals()["id"].tolist() == [result["eval_id"]]


def test_versions_of_the_local_model_can_be_named(env) -> None:
    cfg, store, backend = env
    evaluator = Evaluator(cfg, store, {"deepseek": backend})
    assert evaluator.evaluate_model(["Hi"], model="deepseek@base")["model_version"] == "base"
    with pytest.raises(RegistryError):
        evaluator.evaluate_model(["Hi"], model="deepseek@v0009")
    with pytest.raises(KeyError, match="Unknown model 'gemini'"):
        evaluator.evaluate_model(["Hi"], model="gemini")


def test_compare_same_model_twice_is_not_significant(env) -> None:
    cfg, store, backend = env
    items = [{"prompt": p, "reference": r} for p, r in zip(MIXED_PROMPTS, REFERENCES)] + [{"prompt": "No ref"}]
    comparison = Evaluator(cfg, store, {"deepseek": backend}).compare_models(items, ["deepseek", "deepseek"], n_boot=200)
    assert list(comparison.summary["model"]) == ["deepseek", "deepseek #2"]
    assert len(comparison.table) == 6 and list(comparison.table["prompt"]) == [i["prompt"] for i in items]
    assert comparison.table["deepseek: output"].tolist() == comparison.table["deepseek #2: output"].tolist()
    assert set(comparison.significance["metric"]) == {"rougeL", "bleu", "key_term_recall"}
    assert not comparison.significance["significant"].any()
    assert (comparison.significance["n_items"] <= 5).all()  # the item without a reference is not tested
    evals = store.evals()
    assert len(evals) == 2 and evals["comparison_id"].nunique() == 1


DEPOT = "The delivery window for the north depot is Tuesday morning between eight and ten."
DEPOT_ITEMS = [{"prompt": f"Question {i} about the north depot?", "reference": DEPOT} for i in range(12)]


def with_oracle(env, server, **caps: int) -> Evaluator:
    """An Evaluator over the tiny learner and an "oracle" API model (an OpenAI-compatible fake
    server), asked through the workbench's router like every API call."""
    from dmac_core.backends.openai_compat import OpenAICompatBackend
    from dmac_core.config import CapsConfig, OpenAICompatModelConfig
    from dmac_core.serving.router import ModelManager

    cfg, store, backend = env
    model = OpenAICompatModelConfig(kind="openai_compat", model="oracle-1", base_url=server.openai_base_url,
                                    timeout_s=5, max_retries=0, max_output_tokens=64)
    cfg.models["oracle"] = model
    if caps:
        cfg.routing.caps["oracle"] = CapsConfig(**caps)
    backends = {"deepseek": backend, "oracle": OpenAICompatBackend("oracle", model, "k")}
    return Evaluator(cfg, store, backends, router=ModelManager(cfg, store, backends))


def test_compare_with_an_api_model_finds_a_planted_difference(env, fake_openai) -> None:
    fake_openai.set_instant(DEPOT)  # the "oracle" API model always answers the reference
    comparison = with_oracle(env, fake_openai).compare_models(DEPOT_ITEMS, ["deepseek", "oracle"])
    assert len(fake_openai.requests) == 12  # the same items for every model
    assert fake_openai.requests[0].body["temperature"] == 0.0
    oracle = comparison.results[1]
    assert oracle["model_version"] is None and oracle["metrics"]["rougeL"] == pytest.approx(1.0)
    sig = comparison.significance.set_index("metric")
    assert bool(sig.loc["rougeL", "significant"]) and bool(sig.loc["bleu", "significant"])
    assert sig.loc["rougeL", "diff"] > 0.5 and sig.loc["bleu", "ci_low"] > 0


def test_a_failed_api_call_is_an_error_not_a_zero_score(env, fake_openai) -> None:
    from tests.fake_servers import Reply, error_body

    fake_openai.set_instant(DEPOT)
    fake_openai.enqueue(*[Reply(status=400, body=error_body(400, "bad request")) for _ in range(2)])
    comparison = with_oracle(env, fake_openai).compare_models(DEPOT_ITEMS, ["deepseek", "oracle"])
    oracle = comparison.results[1]
    assert oracle["metrics"]["errors"] == 2 and oracle["metrics"]["n_scored"] == 10
    assert [row["rougeL"] for row in oracle["per_item"][:2]] == [None, None]
    assert oracle["per_item"][0]["error"] and oracle["per_item"][0]["output"] == ""
    assert oracle["metrics"]["rougeL"] == pytest.approx(1.0)  # the ten answers, not ten answers and two zeros
    # the comparison pairs the items both models answered, and says how many
    assert set(comparison.significance["n_items"]) == {10}


def test_api_evaluation_goes_through_the_router_logged_and_counted(env, fake_openai) -> None:
    _, store, _ = env
    fake_openai.set_instant(DEPOT)
    evaluator = with_oracle(env, fake_openai, requests_per_day=100)
    result = evaluator.evaluate_model(DEPOT_ITEMS, model="oracle", suite="depot", max_new_tokens=32)
    logged = store.records("interactions")
    assert len(logged) == 12 and {r["purpose"] for r in logged} == {"evaluation"}
    assert {r["model"] for r in logged} == {"oracle"} and {r["user"] for r in logged} == {"evaluation"}
    assert {r["session_id"] for r in logged} == {result_session(store, result)}
    assert [row["interaction_id"] for row in result["per_item"]] == [r["id"] for r in logged]
    assert evaluator.router.usage.usage("oracle").requests_today == 12  # the usage panel's count
    assert fake_openai.requests[0].body["max_tokens"] == 32 and fake_openai.requests[0].body["temperature"] == 0.0
    # answers nobody rated are no training material: the dataset holds the rated answers only
    from dmac_core.training.dataset import build_dataset

    for k in range(4):
        rated = store.append_interaction(model="deepseek", prompt=f"Rated question {k}?", response=f"Rated answer {k}.")
        store.append_feedback(interaction_id=rated.id, rating=5)
    data = build_dataset(store, env[0].learner)
    assert sorted(ex["completion"][0]["content"] for ex in data.sft_train + data.sft_eval) == [
        f"Rated answer {k}." for k in range(4)]


def result_session(store, result) -> str:
    [record] = [e for e in store.records("evals") if e["id"] == result["eval_id"]]
    return record["session_id"]


def test_an_evaluation_that_would_pass_a_cap_is_refused_before_the_first_call(env, fake_openai) -> None:
    from dmac_core.evaluation.evaluator import BudgetError

    _, store, _ = env
    fake_openai.set_instant(DEPOT)
    evaluator = with_oracle(env, fake_openai, requests_per_day=10)
    with pytest.raises(BudgetError, match=r"evaluating 12 items would pass a cap — oracle: needs 12 requests, "
                                          r"10 of its 10 a day are left \(0 used today\)"):
        evaluator.compare_models(DEPOT_ITEMS, ["deepseek", "oracle"])
    assert fake_openai.requests == [] and store.records("interactions") == []
    assert store.records("evals") == []  # not even the learner's half was run
    # tokens: 12 items x (64 answer tokens + 200 for the question) = 3,168 > 3,000
    tokens = with_oracle(env, fake_openai, tokens_per_day=3000)
    with pytest.raises(BudgetError, match=r"may use up to 3,168 tokens, 3,000 of its 3,000 a day are left"):
        tokens.evaluate_model(DEPOT_ITEMS, model="oracle")
    assert fake_openai.requests == []


def test_heldout_split_is_stable_and_shared(env) -> None:
    cfg, store, _ = env
    # Pinned values: training's dataset split uses this same function; a change here moves items
    # between the training and held-out sets and must be deliberate.
    assert heldout_bucket("What is the capital of France?") == heldout_bucket("  what is the CAPITAL of france? ")
    assert [heldout_bucket(p) for p in ("a", "What is the capital of France?")] == [250, 24]
    share = sum(is_heldout(f"prompt number {i}", 0.1) for i in range(4000)) / 4000
    assert 0.08 < share < 0.12
    assert not any(is_heldout(f"p{i}", 0.0) for i in range(200))

    prompts = [f"Fact question {i}?" for i in range(60)]
    for p in prompts:
        store.append_feedback(prompt=p, response=f"Answer to {p}", rating=5)
    store.append_feedback(prompt="Low rated?", response="bad", rating=1)
    suite = heldout_suite(store, cfg)  # tiny config: validation_fraction 0.25
    expected = {p for p in prompts if is_heldout(p, cfg.learner.validation_fraction)}
    assert {item["prompt"] for item in suite} == expected and 5 < len(expected) < 30
    assert all(item["reference"] == f"Answer to {item['prompt']}" for item in suite)


def test_load_suite_yaml_and_jsonl(tmp_path: Path) -> None:
    yaml_file = tmp_path / "suite.yaml"
    yaml_file.write_text("- What is 2+2?\n- prompt: Capital of France?\n  reference: Paris.\n", encoding="utf-8")
    assert load_suite(yaml_file) == [
        {"prompt": "What is 2+2?", "reference": None},
        {"prompt": "Capital of France?", "reference": "Paris."},
    ]
    mapping = tmp_path / "named.yml"
    mapping.write_text("name: basics\nitems:\n  - prompt: Hi\n", encoding="utf-8")
    assert load_suite(mapping) == [{"prompt": "Hi", "reference": None}]
    jsonl = tmp_path / "suite.jsonl"
    jsonl.write_text('{"prompt": "Hi", "reference": "Hello"}\n\n{"prompt": "Bye", "reference": null, "id": 7}\n')
    assert load_suite(jsonl) == [{"prompt": "Hi", "reference": "Hello"}, {"prompt": "Bye", "reference": None, "id": 7}]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "ok"}\n{"prompt": oops}\n', r"bad\.jsonl, line 3: not valid JSON"),
        ("bad.jsonl", '{"prompt": "ok"}\n{"reference": "no prompt"}\n', r"bad\.jsonl, line 2: 'prompt' must be"),
        ("bad.yaml", "- prompt: ok\n- prompt: fine\n  referenc: typo\n", r"bad\.yaml, line 2: unknown key\(s\) \['referenc'\]"),
        ("bad.yaml", "- prompt: ok\n  reference: [1, 2]\n", r"bad\.yaml, line 1: 'reference' must be a string"),
        ("bad.yaml", "prompt: [unclosed\n", r"bad\.yaml: not valid YAML"),
        ("bad.yaml", "just a string\n", r"bad\.yaml: expected a list"),
        ("empty.jsonl", "\n\n", r"empty\.jsonl: the test set has no items"),
        ("suite.csv", "prompt\nhi\n", r"suite\.csv: unknown test-set format"),
    ],
)
def test_load_suite_errors_name_the_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SuiteError, match=message):
        load_suite(path)


def test_load_suite_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="Cannot read test set .*nope.yaml"):
        load_suite(tmp_path / "nope.yaml")


@pytest.mark.integration
def test_bundled_model_batched_answers_align_with_their_prompts(real_model_dir: Path, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "config.yaml", tiny_config_dict(tmp_path / "data", real_model_dir)))
    loaded = local_backend(cfg).current()
    prompts = ["What is the capital of France?", "Write the number that comes after 41, digits only.",
               "Say hello in French, one word."]
    batched = generate_batch(loaded, prompts, max_new_tokens=12, batch_size=8)
    assert "Paris" in batched[0] and "Paris" not in batched[1] + batched[2]
    singles = [generate_batch(loaded, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    # fp32 batched vs unbatched may flip near-ties late in an answer: compare the opening words.
    assert [b.split()[:3] for b in batched] == [s.split()[:3] for s in singles]


def test_cli_evaluates_a_suite_file_and_prints_the_comparison(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:
    from dmac_core.cli.evaluation import main

    data = tiny_config_dict(tmp_path / "data", tiny_model_dir)
    data["models"]["remote"] = {"kind": "openai_compat", "base_url": "http://127.0.0.1:9/v1",
                                "api_key_env": "DMAC_TEST_KEY_THAT_IS_NEVER_SET"}
    config_path = write_config(tmp_path / "config.yaml", data)
    suite = tmp_path / "basics.yaml"
    suite.write_text("- prompt: Capital of France?\n  reference: Paris is the capital.\n- Say hi\n", encoding="utf-8")
    out_csv = tmp_path / "items.csv"
    code = main(["--config", str(config_path), "evaluate", "--suite", str(suite), "--models", "deepseek,deepseek",
                 "--max-new-tokens", "4", "--bootstrap", "100", "--csv", str(out_csv)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "Suite 'basics': 2 items, 1 with a reference" in printed.out
    assert "rougeL" in printed.out and "Differences vs deepseek" in printed.out and "deepseek #2" in printed.out
    assert "evaluate basics" in printed.err  # the progress bar
    assert out_csv.read_text(encoding="utf-8").startswith("prompt,reference,deepseek: output")
    store = LearningStore(tmp_path / "data", fsync=False)
    assert list(store.evals()["suite"]) == ["basics", "basics"]

    # Clear refusals, exit code 2 or 1, no traceback:
    assert main(["--config", str(config_path), "evaluate", "--suite", str(suite), "--models", "nope"]) == 2
    assert "Unknown model(s) ['nope']" in capsys.readouterr().err
    assert main(["--config", str(config_path), "evaluate", "--suite", str(tmp_path / "missing.yaml")]) == 2
    assert "Cannot read test set" in capsys.readouterr().err
    assert main(["--config", str(config_path), "evaluate", "--suite", str(suite), "--models", "remote"]) == 1
    assert "remote is not available: DMAC_TEST_KEY_THAT_IS_NEVER_SET is not set" in capsys.readouterr().err
    assert len(store.evals()) == 2  # nothing persisted for the refused runs


def test_served_answers_are_chats_answers_and_a_known_answer_is_not_asked_again(env) -> None:
    cfg, store, backend = env
    evaluator = Evaluator(cfg, store, {"deepseek": backend})
    items = [{"prompt": "Capital of France?", "reference": "Paris."}, {"prompt": "Name a colour.", "reference": "Blue."}]
    first = evaluator.evaluate_model(items, suite="one")
    chat = [backend.generate([{"role": "user", "content": i["prompt"]}]).text for i in items]
    assert [row["output"] for row in first["per_item"]] == chat  # evaluation measures what chat says
    again = Evaluator(cfg, store, {"deepseek": backend}).evaluate_model(items, suite="two")
    assert [row["reused_from"] for row in again["per_item"]] == [first["eval_id"]] * 2
    assert [row["output"] for row in again["per_item"]] == chat
    assert [row["loss"] for row in again["per_item"]] == [row["loss"] for row in first["per_item"]]
    assert again["metrics"]["loss"] == pytest.approx(first["metrics"]["loss"])
    assert again["per_item"][0]["answer_key"] == first["per_item"][0]["answer_key"]
    # another token budget is another answer: asked, not reused
    longer = Evaluator(cfg, store, {"deepseek": backend}).evaluate_model(items[:1], suite="three", max_new_tokens=3)
    assert "reused_from" not in longer["per_item"][0]
    # a whole evaluation is reused only when asked to (the gate does, for the served version)
    assert evaluator.evaluate_model(items, suite="one", reuse=True)["eval_id"] == first["eval_id"]
    assert evaluator.evaluate_model(items, suite="one")["eval_id"] != first["eval_id"]
