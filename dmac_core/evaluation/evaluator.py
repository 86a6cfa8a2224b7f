"""Evaluation: reference loss, batched generation, suites, ``evaluate_model`` and comparisons.

Metric definitions live in :mod:`dmac_core.evaluation.metrics`; this module runs models on suites and
persists the results to ``<data_dir>/evals/YYYY-MM.jsonl``. Evaluation calls backends
directly (not through the router): its answers are measurements, not conversations, so they
never land in the interaction logs that training reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from ..backends.base import Backend, BackendError
from ..config import LEARNER, Config
from ..logs.records import new_id
from ..logs.store import LearningStore
from ..serving.errors import RoutingError
from ..serving.usage import day_budget_shortfall, minute_cap_reached
from .local import Progress, _messages, generate_batch, generate_batch_details, reference_loss  # noqa: F401
from .metrics import (
    ROUGE_TYPES,
    bleu,
    bleu_bootstrap_diff,
    bootstrap_diff,
    check_aligned,
    key_term_recall,
    mean_of,
    rouge_scores,
)
from .splits import heldout_bucket, is_heldout, normalize_prompt  # noqa: F401 (re-exported)

RUNTIMES = ("served", "fp32")  # what answers a local model's prompts in an evaluation (see Evaluator)


class BudgetError(RuntimeError):
    """An evaluation would pass a model's usage cap: refused before any call."""


class SuiteError(ValueError):
    """A test-set file is unreadable or malformed; the message names the file and line."""


# -- the held-out split (shared with training/dataset.py: one implementation) ----------------
# -- references from the logs ------------------------------------------------------------------
def reference_index(store: LearningStore, min_rating: int) -> dict[str, dict[str, Any]]:
    """Best logged answer per normalised prompt: the newest analyst correction first, else the
    highest-rated answer rated ≥ ``min_rating`` (newest among equals). Low-rated answers are
    never references: scoring a model by its similarity to a bad answer would reward badness."""
    best: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
    for order, row in enumerate(store.feedback().to_dict("records")):  # rows are in time order
        correction, rating = row.get("correction"), row.get("rating")
        if isinstance(correction, str) and correction.strip():
            rank, text, source = (1, 0, order), correction, "correction"
        elif isinstance(rating, (int, float)) and not pd.isna(rating) and rating >= min_rating:
            rank, text, source = (0, int(rating), order), row["response"], f"rated {int(rating)}"
        else:
            continue
        key = normalize_prompt(row["prompt"])
        if key not in best or rank > best[key][0]:
            best[key] = (rank, {"prompt": row["prompt"], "reference": text, "reference_source": source})
    return {key: value for key, (_, value) in best.items()}


def heldout_suite(store: LearningStore, cfg: Config) -> list[dict[str, Any]]:
    """The stable held-out split of the logs: prompts with a good reference whose bucket is
    below ``validation_fraction``×1000 (training leaves exactly these out)."""
    fraction = cfg.learner.validation_fraction
    index = reference_index(store, cfg.learner.min_rating_for_sft)
    return [dict(item) for item in index.values() if is_heldout(item["prompt"], fraction)]


# -- suites from files -------------------------------------------------------------------------
def load_suite(path: str | Path) -> list[dict[str, Any]]:
    """Read a YAML (list, or mapping with ``items``) or JSONL test set of
    ``{"prompt": str, "reference": str | null}`` items (a bare string is a prompt)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"Cannot read test set {path}: {exc}") from None
    return parse_suite(text, str(path))


def parse_suite(text: str, source: str) -> list[dict[str, Any]]:
    """Parse a test set's text; ``source`` (a file name) picks the format and names errors."""
    if source.lower().endswith(".jsonl"):
        entries = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append((lineno, json.loads(line)))
                except ValueError as exc:
                    raise SuiteError(f"{source}, line {lineno}: not valid JSON ({exc})") from None
    elif source.lower().endswith((".yaml", ".yml")):
        entries = _yaml_entries(text, source)
    else:
        raise SuiteError(f"{source}: unknown test-set format; use .yaml, .yml or .jsonl")
    items = [_suite_item(entry, f"{source}, line {lineno}") for lineno, entry in entries]
    if not items:
        raise SuiteError(f"{source}: the test set has no items")
    return items


def _yaml_entries(text: str, source: str) -> list[tuple[int, Any]]:
    try:
        data, root = yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        raise SuiteError(f"{source}: not valid YAML ({exc})") from None
    if isinstance(data, dict) and set(data) <= {"name", "items"} and "items" in data:
        data = data["items"]
        root = next(v for k, v in root.value if k.value == "items")
    if not isinstance(data, list):
        raise SuiteError(f"{source}: expected a list of items (or a mapping with 'items'), got {type(data).__name__}")
    return [(node.start_mark.line + 1, entry) for node, entry in zip(root.value, data)]


def _suite_item(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        entry = {"prompt": entry}
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}: expected a prompt string or a mapping, got {type(entry).__name__}")
    unknown = set(entry) - {"prompt", "reference", "id"}
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: prompt, reference, id")
    prompt, reference = entry.get("prompt"), entry.get("reference")
    if not isinstance(prompt, str) or not prompt.strip():
        raise SuiteError(f"{where}: 'prompt' must be a non-empty string")
    if reference is not None and not isinstance(reference, str):
        raise SuiteError(f"{where}: 'reference' must be a string or null, got {type(reference).__name__}")
    return {"prompt": prompt, "reference": reference or None, **({"id": entry["id"]} if "id" in entry else {})}


@dataclass
class Comparison:
    """One suite through several models: per-model results, side-by-side items, significance."""

    comparison_id: str
    results: list[dict[str, Any]]  # one evaluate_model() result per model, in the order given
    summary: pd.DataFrame  # one row per model: aggregate metrics
    table: pd.DataFrame  # one row per item: prompt, reference, each model's output and scores
    significance: pd.DataFrame  # each model vs the first: diff, 95 % CI, significant



class Evaluator:
    """Runs suites through models (``backends`` by config name) and persists the results.

    A local model may be named with a version, ``"deepseek@v0002"`` (or ``"deepseek@base"``),
    to evaluate a version other than the served one; plain ``"deepseek"`` is the served one.

    ``runtime`` (default ``models.deepseek.evaluate_with``) decides what answers a local
    model's prompts: ``"served"`` — the runtime, weight format and decoding that serve chat
    (llama.cpp over the version's GGUF copy by default), one question at a time exactly as
    chat asks it; ``"fp32"`` — the transformers model in fp32, batched. Loss and token
    accuracy on references always come from a transformers model. Every eval record names
    the runtime, weights and decoding its answers came from.
    """

    def __init__(
        self, config: Config, store: LearningStore, backends: dict[str, Backend], batch_size: int = 8,
        progress: Progress | None = None, runtime: str | None = None, router: Any = None,
    ) -> None:
        self.config, self.store, self.backends = config, store, backends
        # API models are asked through the router (a ModelManager): caps count, each call is
        # logged as an interaction with purpose "evaluation", and it shows in the usage panel.
        self.router = router
        self.batch_size = batch_size
        self.progress = progress
        self.runtime = runtime or config.learner.evaluate_with
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        self._versions: dict[tuple[str, str], Any] = {}  # (backend, version) -> LoadedModel

    # -- items and references -----------------------------------------------------------
    def resolve_items(
        self, test_prompts: Sequence[Any], references: Sequence[str | None] | None = None
    ) -> list[dict[str, Any]]:
        """Suite items with references: given ones first, else the best logged answer, else none."""
        items = [dict(p) if isinstance(p, dict) else {"prompt": p} for p in test_prompts]
        if references is not None:
            check_aligned(items, references)
            for item, ref in zip(items, references):
                item["reference"] = ref
        index: dict[str, dict[str, Any]] | None = None
        for item in items:
            if item.get("reference"):
                item.setdefault("reference_source", "given")
                continue
            if "reference_source" in item:  # already resolved (e.g. by compare_models): no logged answer
                continue
            if index is None:
                index = reference_index(self.store, self.config.learner.min_rating_for_sft)
            found = index.get(normalize_prompt(item["prompt"]))
            item["reference"] = found["reference"] if found else None
            item["reference_source"] = found["reference_source"] if found else None
        return items

    def _target(self, model: str) -> tuple[str, Backend, Any]:
        name, _, version = model.partition("@")
        if name not in self.backends:
            raise KeyError(f"Unknown model {name!r}; known: {', '.join(sorted(self.backends))}")
        backend = self.backends[name]
        availability = backend.available()
        if not availability.ok:  # refuse up front: a column of failed answers would look like a bad model
            raise BackendError(f"{name} is not available: {availability.reason}", kind="unavailable")
        if not hasattr(backend, "current"):  # an API model
            if version:
                raise ValueError(f"{name} is an API model: only the local learner has versions (got {model!r})")
            return name, backend, None
        version = version or backend.served_version()
        if self.runtime == "served" and version == backend.served_version():
            return name, backend, backend.current()
        if self.runtime == "served":  # the backend keeps what it loaded for the next suite
            return name, backend, backend.load_version(version)
        if (name, version) not in self._versions:  # fp32: the version's transformers model alone
            # here, for start-up time: the topic router imports this module without loading torch
            import torch

            from ..learner.loading import load_model

            if len(self._versions) >= 2:  # each copy of the model costs ~0.5 GB: keep few
                self._versions.pop(next(iter(self._versions)))
            backend.ensure_base()
            self._versions[(name, version)] = load_model(backend.base_path, backend.registry.get(version),
                                                         torch.float32)
        return name, backend, self._versions[(name, version)]

    def _local_answers(self, backend: Any, loaded: Any, items: list[dict[str, Any]], max_new: int,
                       system: str) -> list[dict[str, Any]]:
        """Answers of a local model: through the serving path one by one, or fp32 batched."""
        if self.runtime == "fp32":
            return generate_batch_details(loaded, [i["prompt"] for i in items], max_new, self.batch_size, system,
                                          self.progress, decoding=backend.decoding)
        outs = []
        known = self._known_answers()
        for item in items:
            messages = _messages(item["prompt"], system)
            budget = item.get("max_new_tokens") or max_new
            target, routing = backend.route(loaded, messages)
            key = self._answer_key(backend, target, messages, budget)
            earlier = known.get(key)
            if earlier is not None:  # the same weights, runtime, decoding and question: the same answer
                out = {k: earlier.get(k) for k in ("tokens_in", "tokens_out", "latency_ms", "finish_reason")}
                out.update(text=earlier["output"], reused_from=earlier["eval_id"])
                if earlier.get("reference") == item.get("reference") and earlier.get("reference_tokens"):
                    # and the same weights under the same reference: the same loss
                    out["known_loss"] = {k: earlier[k] for k in ("loss", "perplexity", "token_accuracy")}
                    out["known_loss"]["tokens"] = earlier["reference_tokens"]
            else:
                gen = backend.answer_with(loaded, messages, max_new_tokens=budget, temperature=0.0)
                out = {"text": gen.text, "tokens_in": gen.tokens_in, "tokens_out": gen.tokens_out,
                       "latency_ms": gen.latency_ms, "finish_reason": gen.finish_reason}
            out.update(answer_key=key, answered_by=target.version, scope=routing.to_dict() if routing else None)
            outs.append(out)
            if self.progress:
                self.progress(1)
        return outs

    def _answer_key(self, backend: Any, target: Any, messages: list[Any], max_new: int) -> str:
        """What one greedy answer depends on, hashed: the answering weights' files, runtime and
        weight format, decoding, the conversation and the token budget."""
        described = [backend.fingerprint(target.version), target.runtime, backend.decoding.describe(),
                     messages, max_new]
        return hashlib.sha256(json.dumps(described, default=str).encode()).hexdigest()

    def _known_answers(self) -> dict[str, dict[str, Any]]:
        """Answers stored by earlier evaluations, by answer key (a deterministic answer is not
        asked for twice: the promotion gate asks a new version's base the same general questions
        the served base was asked)."""
        known: dict[str, dict[str, Any]] = {}
        for record in self.store.records("evals"):
            for row in record.get("per_item") or []:
                if row.get("answer_key") and not row.get("error"):
                    known[row["answer_key"]] = {**row, "eval_id": record.get("id")}
        return known

    def runtime_label(self, loaded: Any) -> str:
        """What answered a local model's prompts, in words (kept on eval records)."""
        return loaded.runtime if self.runtime == "served" else "transformers fp32 (batched generate)"

    # -- one model ------------------------------------------------------------------------
    def evaluate_model(
        self, test_prompts: Sequence[Any], model: str = LEARNER, references: Sequence[str | None] | None = None,
        suite: str = "adhoc", max_new_tokens: int | None = None, reuse: bool = False, **record_extra: Any,
    ) -> dict[str, Any]:
        """Answer every prompt with ``model``, score against references, persist, return the result.

        ``test_prompts``: strings or ``{"prompt", "reference"}`` items (an item may carry its
        own ``max_new_tokens``). Items without any reference (none given, none logged) get
        generation-only results marked ``has_reference: False`` and are left out of the
        similarity and loss metrics.

        ``reuse``: for a local version, return the stored result of an earlier evaluation of
        the very same weights, runtime, decoding and items instead of answering again (the
        promotion gate reuses the served version's evidence this way).
        """
        items = self.resolve_items(test_prompts, references)
        name, backend, loaded = self._target(model)
        system = self.config.routing.system_prompt
        started = time.perf_counter()
        max_new = max_new_tokens
        if loaded is not None:
            max_new = max_new_tokens or self.config.learner.max_new_tokens
            record_extra = {"runtime": self.runtime_label(loaded), "decoding": backend.decoding.describe(),
                            "loss_model": loaded.loss_model, **record_extra}
            record_extra["eval_key"] = self._eval_key(backend, loaded, items, max_new, system, suite, record_extra)
            if reuse and (earlier := self._earlier(record_extra["eval_key"])) is not None:
                return earlier
            outs = self._local_answers(backend, loaded, items, max_new, system)
            # the base the version was really trained on (a transfer-learning version names its own)
            version, provider = loaded.version, loaded.base_name or getattr(backend, "base_path", Path(name)).name
        else:
            self.check_budget([model], len(items), max_new_tokens)
            outs, version, provider = [], None, getattr(getattr(backend, "config", None), "model", name)
            session = new_id()  # the evaluation's calls share one session id in the interaction log
            for item in items:
                outs.append(self._api_answer(name, item["prompt"], max_new_tokens, system, session))
                if self.progress:
                    self.progress(1)
            record_extra = {"runtime": "API", "session_id": session, **record_extra}
        wall_s = time.perf_counter() - started
        rows = [
            {"index": k, "prompt": it["prompt"], "reference": it["reference"],
             "reference_source": it["reference_source"], "has_reference": it["reference"] is not None,
             "output": out["text"], "tokens_in": out.get("tokens_in"),
             "tokens_out": out.get("tokens_out"), "latency_ms": out.get("latency_ms"), "error": out.get("error"),
             "finish_reason": out.get("finish_reason"),
             **{k: out[k] for k in ("answer_key", "reused_from", "answered_by", "scope", "known_loss", "interaction_id")
                if out.get(k)}}
            for k, (it, out) in enumerate(zip(items, outs))
        ]
        metrics = self._score(rows, loaded, system)
        metrics.update(wall_s=wall_s, max_new_tokens=max_new,
                       batch_size=self.batch_size if loaded is not None and self.runtime == "fp32" else 1)
        record = self.store.append_eval(
            model=name, model_version=version, suite=suite, n=len(rows), metrics=metrics, per_item=rows,
            provider_model=provider, **record_extra,
        )
        return {"model": name, "model_version": version, "suite": suite, "n": len(rows), "metrics": metrics,
                "per_item": rows, "eval_id": record.id, "runtime": record_extra.get("runtime"),
                "decoding": record_extra.get("decoding")}

    def _reference_loss(self, loaded: Any, scored: list[dict[str, Any]], refs: list[str],
                        system: str) -> dict[str, Any]:
        """Loss and token accuracy of the references, each item under the weights that answered it
        (a scoped version's own, or its base for questions outside its scope); token-weighted."""
        models = {loaded.version: loaded}
        if getattr(loaded, "fallback", None) is not None:
            models[loaded.fallback.version] = loaded.fallback
        groups: dict[str, list[int]] = {}
        per_item: list[dict[str, Any]] = [{} for _ in scored]
        for k, row in enumerate(scored):
            if row.get("known_loss"):  # reused with its answer (see _local_answers)
                per_item[k] = row.pop("known_loss")
            else:
                groups.setdefault(row.get("answered_by") or loaded.version, []).append(k)
        for version, indices in groups.items():
            target = models[version]
            with target.lock:
                part = reference_loss(target.model, target.tokenizer, [scored[k]["prompt"] for k in indices],
                                      [refs[k] for k in indices], self.batch_size, self.config.learner.max_length,
                                      system)
            for k, item in zip(indices, part["per_item"]):
                per_item[k] = item
        for row, item in zip(scored, per_item):
            row.update(loss=item["loss"], perplexity=item["perplexity"], token_accuracy=item["token_accuracy"],
                       reference_tokens=item["tokens"])
        tokens = sum(item["tokens"] for item in per_item)
        total = sum(item["loss"] * item["tokens"] for item in per_item if item["tokens"])
        hits = sum(item["token_accuracy"] * item["tokens"] for item in per_item if item["tokens"])
        mean = total / tokens if tokens else None
        return {"loss": mean, "perplexity": math.exp(min(mean, 700.0)) if mean is not None else None,
                "token_accuracy": hits / tokens if tokens else None, "tokens": tokens}

    @staticmethod
    def _eval_key(backend: Any, loaded: Any, items: list[dict[str, Any]], max_new: int, system: str, suite: str,
                  extra: dict[str, Any]) -> str:
        """What an evaluation of a local version depends on, hashed: the version's weight files
        (paths, sizes, times), runtime, decoding, loss model, token budgets and items."""
        described = [backend.name, loaded.version, backend.fingerprint(loaded.version), extra["runtime"],
                     extra["decoding"], extra["loss_model"], max_new, system, suite,
                     [[i["prompt"], i["reference"], i.get("max_new_tokens")] for i in items]]
        return hashlib.sha256(json.dumps(described, default=str).encode()).hexdigest()

    def _earlier(self, key: str) -> dict[str, Any] | None:
        """The newest stored evaluation with ``key``, shaped like :meth:`evaluate_model`'s result."""
        for record in reversed(self.store.records("evals")):
            if record.get("eval_key") == key:
                return {"model": record["model"], "model_version": record["model_version"], "suite": record["suite"],
                        "n": record["n"], "metrics": record["metrics"], "per_item": record["per_item"],
                        "eval_id": record["id"], "runtime": record.get("runtime"), "decoding": record.get("decoding"),
                        "reused": True}
        return None

    def check_budget(self, models: Sequence[str], n_items: int, max_new_tokens: int | None) -> None:
        """Refuse (``BudgetError``, with the numbers) before the first call when answering
        ``n_items`` with each API model in ``models`` would pass one of its daily caps. The token
        estimate is an upper bound for everyday questions: each item's answer budget (plus a
        thinking model's thinking budget) and 200 tokens for the question."""
        for model in models:
            name = model.partition("@")[0]
            backend = self.backends.get(name)
            if backend is None or hasattr(backend, "current"):
                continue  # unknown models fail later with their own message; the learner has no caps to spend
            if self.router is None:
                raise ValueError("API models are evaluated through the router: build the Evaluator with router=")
            model_config = getattr(backend, "config", None)
            budget = (max_new_tokens or getattr(model_config, "max_output_tokens", 0) or 0)
            budget += getattr(model_config, "thinking_budget", None) or 0
            shortfall = day_budget_shortfall(name, self.router.usage_now(name), self.config.routing.caps.get(name),
                                             n_items, n_items * (budget + 200))
            if shortfall:
                raise BudgetError(f"Not started, no call made: evaluating {n_items} items would pass a cap — "
                                  f"{shortfall}. Raise the cap in routing.caps or use fewer items.")

    def _api_answer(self, name: str, prompt: str, max_new_tokens: int | None, system: str,
                    session: str) -> dict[str, Any]:
        # Temperature 0: evaluation should measure the model, not the dice. A failed call is an
        # item with an error: it is not scored, and the result counts it in "errors".
        caps = self.config.routing.caps.get(name)
        deadline = time.monotonic() + 65
        while minute_cap_reached(name, self.router.usage_now(name), caps) and time.monotonic() < deadline:
            time.sleep(0.5)  # a per-minute cap paces the evaluation instead of failing its items
        started = time.perf_counter()
        try:
            result = self.router.respond(_messages(prompt, system), model=name, user="evaluation",
                                         session_id=session, purpose="evaluation",
                                         max_new_tokens=max_new_tokens, temperature=0.0)
        except (RoutingError, BackendError) as exc:
            return {"text": "", "error": str(exc)[:300], "latency_ms": (time.perf_counter() - started) * 1000.0}
        latency = result.latency_ms if result.latency_ms is not None else (time.perf_counter() - started) * 1000.0
        return {"text": result.text, "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
                "latency_ms": latency, "interaction_id": result.interaction_id}

    def _score(self, rows: list[dict[str, Any]], loaded: Any, system: str) -> dict[str, Any]:
        with_reference = [r for r in rows if r["has_reference"]]
        # A failed call (or an answer-less one) is an error, counted in "errors", not an answer
        # scoring 0: that would mix "the API failed" into "the model answered badly".
        scored = [r for r in with_reference if not r["error"]]
        preds, refs = [r["output"] for r in scored], [r["reference"] for r in scored]
        rouge, bleus = rouge_scores(preds, refs), bleu(preds, refs)
        for k, row in enumerate(scored):
            recall = key_term_recall(preds[k], refs[k])
            row.update(rouge["per_item"][k], bleu=bleus["per_item"][k], key_term_recall=recall)
        loss: dict[str, Any] = {"loss": None, "perplexity": None, "token_accuracy": None, "tokens": 0}
        if loaded is not None and with_reference:  # the loss needs no answer
            loss = self._reference_loss(loaded, with_reference, [r["reference"] for r in with_reference], system)
        for row in rows:
            for key in (*ROUGE_TYPES, "bleu", "key_term_recall", "loss", "perplexity", "token_accuracy",
                        "reference_tokens"):
                row.setdefault(key, None)
        tokens_out = [r["tokens_out"] for r in rows if r["tokens_out"] is not None]
        return {
            "n_items": len(rows), "n_with_reference": len(with_reference), "n_scored": len(scored),
            "rouge1": rouge["rouge1"], "rouge2": rouge["rouge2"], "rougeL": rouge["rougeL"],
            "bleu": bleus["corpus"], "bleu_sentence_mean": mean_of(bleus["per_item"]),
            "key_term_recall": mean_of([r["key_term_recall"] for r in scored]),
            "loss": loss["loss"], "perplexity": loss["perplexity"], "token_accuracy": loss["token_accuracy"],
            "reference_tokens": loss["tokens"],
            "latency_ms_mean": mean_of([r["latency_ms"] for r in rows]),
            "tokens_in": sum(r["tokens_in"] or 0 for r in rows), "tokens_out": sum(tokens_out),
            "tokens_out_mean": mean_of(tokens_out), "errors": sum(1 for r in rows if r["error"]),
            "stopped_looping": sum(1 for r in rows if r.get("finish_reason") == "repetition"),
            "cut_at_limit": sum(1 for r in rows if r.get("finish_reason") == "length"),
        }

    # -- several models -----------------------------------------------------------------------
    def compare_models(
        self, suite_items: Sequence[Any], models: Sequence[str], suite: str = "compare",
        max_new_tokens: int | None = None, n_boot: int = 1000, seed: int = 0,
    ) -> Comparison:
        """Run the same items (references resolved once, up front) through every model, persist
        each result with a shared ``comparison_id``, and test each model against the first."""
        if not models:
            raise ValueError("compare_models needs at least one model")
        items = self.resolve_items(suite_items)
        self.check_budget(models, len(items), max_new_tokens)  # every model fits, or no call is made
        cid = new_id()
        results = [self.evaluate_model(items, model=m, suite=suite, max_new_tokens=max_new_tokens, comparison_id=cid)
                   for m in models]
        labels = _unique_labels(models)
        table = pd.DataFrame({"prompt": [i["prompt"] for i in items], "reference": [i["reference"] for i in items]})
        for label, res in zip(labels, results):
            for key in ("output", "rougeL", "bleu", "key_term_recall"):
                table[f"{label}: {key}"] = [row[key] for row in res["per_item"]]
        keys = ("model_version", "rouge1", "rouge2", "rougeL", "bleu", "key_term_recall", "loss", "token_accuracy",
                "latency_ms_mean", "tokens_out_mean", "errors")
        summary = pd.DataFrame([{"model": label, **{k: res.get(k, res["metrics"].get(k)) for k in keys},
                                 "eval_id": res["eval_id"]} for label, res in zip(labels, results)])
        base = results[0]["per_item"]
        ref_rows = [k for k, row in enumerate(base) if row["has_reference"]]
        tests = []
        for label, res in zip(labels[1:], results[1:]):
            other = res["per_item"]
            pairs = [(base[k], other[k]) for k in ref_rows if not base[k]["error"] and not other[k]["error"]]
            rouge_a, rouge_b = [a["rougeL"] for a, _ in pairs], [b["rougeL"] for _, b in pairs]
            kt = [(a["key_term_recall"], b["key_term_recall"]) for a, b in pairs if a["key_term_recall"] is not None]
            for metric, outcome in (
                ("rougeL", bootstrap_diff(rouge_a, rouge_b, n_boot, seed)),
                ("bleu", bleu_bootstrap_diff([a["output"] for a, _ in pairs], [b["output"] for _, b in pairs],
                                               [a["reference"] for a, _ in pairs], n_boot, seed)),
                ("key_term_recall", bootstrap_diff([a for a, _ in kt], [b for _, b in kt], n_boot, seed)),
            ):
                tests.append({"model": label, "baseline": labels[0], "metric": metric, **outcome})
        columns = ["model", "baseline", "metric", "verdict", "diff", "ci_low", "ci_high", "p_value", "n_items",
                   "significant"]
        return Comparison(cid, results, summary, table, pd.DataFrame(tests, columns=columns))


def _unique_labels(models: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    labels = []
    for m in models:
        seen[m] = seen.get(m, 0) + 1
        labels.append(m if seen[m] == 1 else f"{m} #{seen[m]}")
    return labels
