"""The promotion gate: a new version is served only on evidence that analysts gain from it.

A finished run's version (the *candidate*) is compared with the version served now (the
*champion*) on answers from the runtime that serves chat (llama.cpp over the version's GGUF
copy by default, with chat's decoding), never on a model nobody talks to. Three checks:

1. **Rated answers learned** — the analysts' rated answers of the run (the newest
   ``gate.max_rated_items``) are asked again; the candidate's answers must match the rated
   references better than the champion's (mean key-term recall; ROUGE-L for references without
   key terms). Every rated answer is trained, none is set aside for validation.
2. **General knowledge kept** — the questions of the general-knowledge suite
   (``gate.general_suite``, shipped as ``config/general_knowledge.yaml``, disjoint from the
   replay prompts) that the champion answers right must still be answered right; at most
   ``gate.max_forgotten`` may be lost, and the evidence names each one.
3. **No over-fitting** — the candidate's loss on the suite's reference answers, which training
   never sees, may be at most ``promotion_tolerance`` above the champion's. Invented or
   unknowable facts cannot raise it; a model that memorised its training set at the expense
   of everything else does.

When analysts' prompts are held out (``validation_fraction`` > 0) they are reported too, for
information: facts nobody can know cannot be learned from others, so their numbers do not decide.

A check without evidence (no rated answers, or a suite the champion answers nothing right in)
does not pass: the gate says what is missing and the version is not promoted. Setting
``gate.general_suite: null`` switches checks 2 and 3 off on purpose, and the gate says so.

Answers and losses come from an injected ``evaluate`` callable (the workbench's
:class:`~dmac_core.evaluation.evaluator.Evaluator`), so each piece of evidence is also an eval record
the Metrics page shows, and the champion's evidence is reused while nothing about it changed.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import yaml

from ..config import LEARNER, Config
from .dataset import TrainingData

PASSED, FAILED, NO_EVIDENCE, OFF, INFO = "passed", "failed", "no evidence", "off", "info"
SUITE_RATED, SUITE_GENERAL, SUITE_HELD_OUT = "rated", "general", "held-out"


class SuiteFileError(ValueError):
    """The general-knowledge suite file is missing or malformed; the message says where."""


class Evaluate(Protocol):
    """``evaluate(items, model, suite, reuse)`` → an ``Evaluator.evaluate_model`` result."""

    def __call__(self, items: list[dict[str, Any]], model: str, suite: str, reuse: bool) -> dict[str, Any]: ...


def load_general_suite(path: Path) -> list[dict[str, Any]]:
    """The suite's items: ``{"prompt", "accept": [words], "reference"}`` each. Raises
    :class:`SuiteFileError` naming the file and the item for anything malformed."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise SuiteFileError(f"Cannot read the general-knowledge suite {path} (models.deepseek.gate.general_suite): "
                             f"{exc}") from None
    except yaml.YAMLError as exc:
        raise SuiteFileError(f"The general-knowledge suite {path} is not valid YAML: {exc}") from None
    if not isinstance(data, list):
        raise SuiteFileError(f"{path}: expected a list of questions, got {type(data).__name__}")
    items = []
    for number, entry in enumerate(data, start=1):
        where = f"{path}, question {number}"
        if not isinstance(entry, dict) or set(entry) - {"prompt", "accept", "reference"}:
            raise SuiteFileError(f"{where}: expected a mapping with prompt, accept and reference")
        prompt, accept, reference = entry.get("prompt"), entry.get("accept"), entry.get("reference")
        accept = [accept] if isinstance(accept, (str, int)) else accept
        if not isinstance(prompt, str) or not prompt.strip():
            raise SuiteFileError(f"{where}: 'prompt' must be a non-empty string")
        if not isinstance(accept, list) or not accept or not all(str(a).strip() for a in accept):
            raise SuiteFileError(f"{where}: 'accept' must list the word(s) a right answer contains")
        if not isinstance(reference, str) or not reference.strip():
            raise SuiteFileError(f"{where}: 'reference' must be a right answer (a sentence)")
        items.append({"prompt": prompt.strip(), "accept": [str(a).strip() for a in accept],
                      "reference": reference.strip()})
    if not items:
        raise SuiteFileError(f"{path}: the suite has no questions; add some, or set gate.general_suite: null")
    return items


def answer_is_right(answer: str, accept: list[str]) -> bool:
    """True when ``answer`` contains one of the accepted words or phrases as whole words
    (case-insensitive): "Paris" is right for [paris]; "Australia" is not for [au]."""
    text = answer.casefold()
    return any(re.search(rf"(?<!\w){re.escape(word.casefold())}(?!\w)", text) for word in accept)


def rated_items(data: TrainingData, limit: int, max_new_tokens: int) -> list[dict[str, Any]]:
    """The run's rated training answers as suite items (the newest ``limit``), each with room
    for an answer a little longer than its reference. Replayed base answers are not analysts'."""
    examples = [ex for ex in data.sft_train if not ex.get("replay")][-limit:]
    items = []
    for ex in examples:
        reference = ex["completion"][-1]["content"]
        budget = min(max_new_tokens, 16 + 2 * len(reference.split()))
        items.append({"prompt": ex["prompt"][-1]["content"], "reference": reference, "max_new_tokens": budget})
    return items


# The trainer validates at every epoch end; a spread sample of the suite keeps that cheap (each
# validation pass over all 46 questions cost as much as two training steps), the gate uses all.
VALIDATION_STRIDE = 3


def general_validation(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ``VALIDATION_STRIDE``-th suite question as SFT examples for the trainer's validation
    set (loss on the references: the new weights alone, before any scope)."""
    return [{"prompt": [{"role": "user", "content": i["prompt"]}],
             "completion": [{"role": "assistant", "content": i["reference"]}],
             "weight": 1.0, "rating": None, "record_ids": [], "feedback": "", "general": True}
            for i in items[::VALIDATION_STRIDE]]


def _item_score(row: dict[str, Any]) -> float:
    recall = row.get("key_term_recall")
    return float(recall if recall is not None else row.get("rougeL") or 0.0)


def check_rated(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    """Check 1 from the two versions' results on the rated items (same items, same order)."""
    check: dict[str, Any] = {"check": SUITE_RATED, "title": "Rated answers learned"}
    if not before or not after or not before["per_item"]:
        return {**check, "status": NO_EVIDENCE, "n": 0,
                "summary": "no rated answers to check learning on (rate answers 4 or 5 to train on them)"}
    pairs = list(zip(before["per_item"], after["per_item"]))
    old, new = [_item_score(a) for a, _ in pairs], [_item_score(b) for _, b in pairs]
    better, worse = sum(n > o for o, n in zip(old, new)), sum(n < o for o, n in zip(old, new))
    mean_old, mean_new = sum(old) / len(old), sum(new) / len(new)
    improved = mean_new > mean_old + 1e-9
    items = [{"prompt": a["prompt"], "reference": a["reference"], "before": a["output"], "after": b["output"],
              "score_before": round(o, 3), "score_after": round(n, 3)} for (a, b), o, n in zip(pairs, old, new)]
    rouge = f"ROUGE-L {before['metrics']['rougeL']:.2f} → {after['metrics']['rougeL']:.2f}"
    summary = (f"match with the rated answers {mean_old:.2f} → {mean_new:.2f} (key terms; {rouge}) on "
               f"{len(pairs)} rated answers: {better} better, {worse} worse")
    return {**check, "status": PASSED if improved else FAILED, "n": len(pairs), "before": round(mean_old, 4),
            "after": round(mean_new, 4), "better": better, "worse": worse,
            "summary": summary if improved else f"not improved: {summary}", "items": items}


def check_general(items: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any],
                  max_forgotten: int) -> dict[str, Any]:
    """Check 2: questions the champion answered right must stay right (up to ``max_forgotten``)."""
    check: dict[str, Any] = {"check": SUITE_GENERAL, "title": "General knowledge kept"}
    lost, gained, known = [], [], 0
    for item, a, b in zip(items, before["per_item"], after["per_item"]):
        was, now = answer_is_right(a["output"], item["accept"]), answer_is_right(b["output"], item["accept"])
        known += was
        if was and not now:
            lost.append({"prompt": item["prompt"], "before": a["output"], "after": b["output"]})
        elif now and not was:
            gained.append({"prompt": item["prompt"], "before": a["output"], "after": b["output"]})
    kept = known - len(lost)
    right_after = kept + len(gained)
    base = {**check, "n": len(items), "known_before": known, "right_after": right_after, "kept": kept,
            "allowed": max_forgotten, "lost": lost, "gained": gained}
    if not known:
        return {**base, "status": NO_EVIDENCE,
                "summary": f"the served version answers none of the {len(items)} general questions right, so "
                           "forgetting cannot be measured: put questions it knows in gate.general_suite"}
    summary = (f"{kept} of the {known} general questions the served version answered right are still right "
               f"({len(lost)} lost, at most {max_forgotten} allowed; {len(gained)} newly right)")
    return {**base, "status": PASSED if len(lost) <= max_forgotten else FAILED, "summary": summary}


def check_overfitting(before: dict[str, Any], after: dict[str, Any], tolerance: float) -> dict[str, Any]:
    """Check 3: loss on the suite's references (never trained) may rise at most ``tolerance``."""
    check: dict[str, Any] = {"check": "overfitting", "title": "No over-fitting (loss on held-out general answers)"}
    old, new = before["metrics"].get("loss"), after["metrics"].get("loss")
    if old is None or new is None:
        return {**check, "status": NO_EVIDENCE, "summary": "no loss could be computed on the general references"}
    limit = old * (1.0 + tolerance)
    verdict = "within" if new <= limit + 1e-9 else "above"
    return {**check, "status": PASSED if verdict == "within" else FAILED, "before": round(old, 4),
            "after": round(new, 4), "limit": round(limit, 4), "tolerance": tolerance,
            "n": before["metrics"].get("n_with_reference"),
            "summary": f"loss on the {before['metrics'].get('n_with_reference')} held-out general references "
                       f"{old:.3f} → {new:.3f}, {verdict} the limit {limit:.3f} (+{tolerance:.0%})"}


def held_out_report(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Analysts' held-out prompts (``validation_fraction`` > 0): reported, never deciding."""
    def value(result: dict[str, Any], key: str) -> float | None:
        return result["metrics"].get(key)

    kt_old, kt_new = value(before, "key_term_recall"), value(after, "key_term_recall")
    loss_old, loss_new = value(before, "loss"), value(after, "loss")
    return {"check": SUITE_HELD_OUT, "title": "Analysts' held-out answers (information)", "status": INFO,
            "n": before["n"], "before": kt_old, "after": kt_new, "loss_before": loss_old, "loss_after": loss_new,
            "summary": f"{before['n']} held-out rated answers: key terms {_fmt(kt_old)} → {_fmt(kt_new)}, loss "
                       f"{_fmt(loss_old)} → {_fmt(loss_new)} (not trained, so facts in them cannot be learned; "
                       "reported, not deciding)"}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def decide(checks: list[dict[str, Any]]) -> tuple[bool, str]:
    """Promote only when every deciding check passed; the reason lists what failed or was missing."""
    deciding = [c for c in checks if c["status"] not in (OFF, INFO)]
    blocking = [c for c in deciding if c["status"] != PASSED]
    if not deciding:
        return False, "no evidence at all: every check is switched off or had nothing to measure"
    if blocking:
        return False, "; ".join(f"{c['title']}: {c['status']} — {c['summary']}" for c in blocking)
    return True, "; ".join(f"{c['title']}: {c['summary']}" for c in deciding)


class PromotionGate:
    """Collects the evidence for one candidate and decides (see the module docstring)."""

    def __init__(self, config: Config, evaluate: Evaluate) -> None:
        self.config = config
        self.evaluate = evaluate

    def general_items(self) -> list[dict[str, Any]] | None:
        """The general-knowledge suite, or None when ``gate.general_suite`` is null."""
        path = self.config.general_suite_path()
        return load_general_suite(path) if path is not None else None

    def _general_eval_items(self, general: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**item, "max_new_tokens": self.config.learner.gate.general_max_new_tokens} for item in general]

    def prepare(self, version: str) -> bool:
        """Measure ``version`` on the general suite now, as the gate would measure a champion,
        so the next run's gate reuses it (``setup`` does this for the served version: the first
        "Train now" then waits only for the new version's answers). False when the check is off."""
        general = self.general_items()
        if general is None:
            return False
        self.evaluate(self._general_eval_items(general), f"{LEARNER}@{version}", SUITE_GENERAL, True)
        return True

    def run(self, candidate: str, champion: str, data: TrainingData,
            progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
        """Measure ``candidate`` against ``champion`` and decide; returns the gate record."""
        started = time.perf_counter()
        learner = self.config.learner
        settings = learner.gate
        checks: list[dict[str, Any]] = []
        evidence: dict[str, dict[str, str]] = {}
        measured_on: dict[str, Any] = {}

        def measure(items: list[dict[str, Any]], suite: str, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
            results, seconds = [], []
            for version in (champion, candidate):
                progress(f"Gate: {what} — {len(items)} answers of {version}…")
                clock = time.perf_counter()
                results.append(self.evaluate(items, f"{LEARNER}@{version}", suite, version == champion))
                seconds.append(round(time.perf_counter() - clock, 1))
            evidence[suite] = {"before": results[0]["eval_id"], "after": results[1]["eval_id"], "seconds": seconds}
            measured_on.update(runtime=results[1].get("runtime"), decoding=results[1].get("decoding"))
            return results[0], results[1]

        rated = rated_items(data, settings.max_rated_items, learner.max_new_tokens)
        checks.append(check_rated(*measure(rated, SUITE_RATED, "rated answers")) if rated else check_rated(None, None))
        general = self.general_items()
        if general is None:
            off = "switched off (models.deepseek.gate.general_suite: null)"
            checks.append({"check": SUITE_GENERAL, "title": "General knowledge kept", "status": OFF, "summary": off})
            checks.append({"check": "overfitting", "title": "No over-fitting (loss on held-out general answers)",
                           "status": OFF, "summary": off})
        else:
            before, after = measure(self._general_eval_items(general), SUITE_GENERAL, "general knowledge")
            checks.append(check_general(general, before, after, settings.max_forgotten))
            checks.append(check_overfitting(before, after, learner.promotion_tolerance))
        if data.sft_eval:
            held = [{"prompt": ex["prompt"][-1]["content"], "reference": ex["completion"][-1]["content"]}
                    for ex in data.sft_eval]
            checks.append(held_out_report(*measure(held, SUITE_HELD_OUT, "held-out rated answers")))
        passed, reason = decide(checks)
        return {"champion": champion, "candidate": candidate, "passed": passed, "reason": reason,
                "checks": checks, "evals": evidence, "tolerance": learner.promotion_tolerance,
                "seconds": round(time.perf_counter() - started, 1), **measured_on}
