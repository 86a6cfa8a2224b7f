"""One training run of the local learner: TRL's SFT / DPO / KTO trainers with a LoRA adapter
(or, with ``finetune: full``, on every weight).

Choices made on purpose (TRL's configs have other defaults):
- ``gradient_checkpointing=False``: the 135M model fits easily; recomputation only costs time.
- bf16 autocast only when :func:`resolve_dtype` says the CPU has native bf16; otherwise torch
  emulates bf16 and fp32 is faster, so we train in plain fp32.
- SFT uses the prompt/completion conversational format: the loss covers the assistant turn
  only (``assistant_only_loss`` needs ``{% generation %}`` markers SmolLM2's template lacks).
- Validation runs every ``evaluation_interval`` optimizer steps (``eval_strategy="steps"``)
  and, through :class:`_ProgressCallback`, at every epoch end that was not just evaluated.
- Checkpoints (adapter + optimizer + scheduler + RNG state) are written every
  ``checkpoint_interval`` steps and when a run is cancelled, so it can be resumed exactly.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import Config
from ..learner.precision import resolve_dtype
from .dataset import TrainingData, weighted_sft_train
from .transfer import load_reference_model, load_start_model

Progress = Callable[[dict[str, Any]], None]

# Checkpoints kept per run: the newest complete one to resume from, and one spare in case it is torn.
CHECKPOINT_KEEP = 2


@dataclass
class TrainResult:
    """Outcome of :func:`run_training`."""

    status: str  # "completed" | "cancelled"
    adapter_dir: Path | None
    method: str = "sft"
    metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def training_dtype_is_bf16(cfg: Config) -> bool:
    """True when training should use bf16 autocast (native bf16 on this CPU, or forced)."""
    import torch  # here, for start-up time: importing the trainer does not load torch

    return resolve_dtype(cfg.learner.precision) == torch.bfloat16


def checkpoint_interval(cfg: Config) -> int:
    """Steps between checkpoints (``models.deepseek.checkpoint_interval`` when the config has it)."""
    return int(cfg.learner.checkpoint_interval or cfg.learner.evaluation_interval)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest *complete* checkpoint of a run. ``trainer_state.json`` is the last file the
    Trainer writes into a checkpoint, so a checkpoint whose state file is missing or unreadable
    was torn by a crash and is skipped."""
    import json

    candidates = []
    for path in (run_dir / "checkpoints").glob("checkpoint-*"):
        step = checkpoint_step(path)
        try:
            state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        weights = any(path.glob("adapter_model.*")) or any(path.glob("model*.safetensors"))
        if step is not None and state.get("global_step") == step and weights and (path / "optimizer.pt").is_file():
            candidates.append((step, path))
    return max(candidates)[1] if candidates else None


def checkpoint_step(path: Path) -> int | None:
    """The step number of a ``checkpoint-N`` directory (None for any other name)."""
    try:
        return int(Path(path).name.split("-")[-1]) if Path(path).name.startswith("checkpoint-") else None
    except ValueError:
        return None


def discard_checkpoints_after(run_dir: Path, keep: Path) -> list[str]:
    """Before resuming from ``keep``: delete torn checkpoints and those newer than ``keep``.

    A newer (torn) directory would otherwise be taken by the Trainer's rotation for a real
    checkpoint and could make it delete the good one, or be half-overwritten on the next save.
    """
    removed = []
    keep_step = checkpoint_step(keep) or 0
    for path in (Path(run_dir) / "checkpoints").glob("checkpoint-*"):
        step = checkpoint_step(path)
        if path.resolve() == Path(keep).resolve():
            continue
        if step is None or step > keep_step or not (path / "trainer_state.json").is_file():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return sorted(removed)


def _lora_config(cfg: Config) -> Any:
    from peft import LoraConfig

    if cfg.learner.finetune == "full":
        return None  # full fine-tuning: every weight trains, no adapter

    lora = cfg.learner.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )


def _common_args(cfg: Config, run_dir: Path, has_eval: bool) -> dict[str, Any]:
    learner = cfg.learner
    bf16 = training_dtype_is_bf16(cfg)
    return dict(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=learner.batch_size,
        per_device_eval_batch_size=learner.batch_size,
        num_train_epochs=learner.epochs,
        learning_rate=learner.learning_rate,
        logging_steps=1,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=learner.evaluation_interval if has_eval else None,
        save_strategy="steps",
        save_steps=checkpoint_interval(cfg),
        save_total_limit=CHECKPOINT_KEEP,
        # The new name wins over TRL's gradient_checkpointing=True default (transformers 5.24).
        activation_checkpointing=False,
        max_length=learner.max_length,
        bf16=bf16,
        fp16=False,
        seed=learner.seed,
        data_seed=learner.seed,
        report_to=[],
        push_to_hub=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=True,
        save_only_model=False,
    )


def _sft_rows(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Only the columns TRL knows: lineage fields would be dragged through tokenisation.
    return [{"prompt": ex["prompt"], "completion": ex["completion"]} for ex in examples]


def build_trainer(
    cfg: Config,
    run_dir: Path,
    data: TrainingData,
    method: str,
    callbacks: list[Any],
) -> Any:
    """A TRL trainer for ``method`` on ``data``: a fresh LoRA adapter on the run's base model,
    or the adapter of the version the run continues (``learner.start_from``, see transfer.py)."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # tokenisation bars would flood the CLI's and the server's output
    model, tokenizer, has_adapter = load_start_model(cfg, cfg.learner.finetune)
    peft_config = None if has_adapter else _lora_config(cfg)
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        train = Dataset.from_list(_sft_rows(weighted_sft_train(data.sft_train)))
        validation = data.sft_eval + data.general_eval
        evals = Dataset.from_list(_sft_rows(validation)) if validation else None
        args = SFTConfig(**_common_args(cfg, run_dir, evals is not None), packing=False)
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=train, eval_dataset=evals,
            processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
        )
        if cfg.learner.padding_free:
            enable_padding_free(trainer)
        return trainer
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        cols = ("prompt", "chosen", "rejected")
        train = Dataset.from_list([{k: ex[k] for k in cols} for ex in data.dpo])
        evals = Dataset.from_list([{k: ex[k] for k in cols} for ex in data.dpo_eval]) if data.dpo_eval else None
        args = DPOConfig(**_common_args(cfg, run_dir, evals is not None))
        return DPOTrainer(
            model=model, ref_model=load_reference_model(cfg), args=args, train_dataset=train, eval_dataset=evals,
            processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
        )
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        cols = ("prompt", "completion", "label")
        train = Dataset.from_list([{k: ex[k] for k in cols} for ex in data.kto])
        # KTO estimates its reference KL from the batch and needs more than one example per batch.
        evals = Dataset.from_list([{k: ex[k] for k in cols} for ex in data.kto_eval]) if len(data.kto_eval) > 1 else None
        common = _common_args(cfg, run_dir, evals is not None)
        common["per_device_train_batch_size"] = max(2, common["per_device_train_batch_size"])
        common["per_device_eval_batch_size"] = max(2, common["per_device_eval_batch_size"])
        args = KTOConfig(**common)
        return KTOTrainer(
            model=model, ref_model=load_reference_model(cfg), args=args, train_dataset=train, eval_dataset=evals,
            processing_class=tokenizer, peft_config=peft_config, callbacks=callbacks,
        )
    raise ValueError(f"Unknown training method {method!r}; expected sft, dpo or kto")


def enable_padding_free(trainer: Any) -> None:
    """Concatenate each batch into one row without padding (TRL's padding-free collation).

    TRL refuses ``padding_free=True`` together with ``max_length`` unless packing is on (it
    would not truncate), and packing changes how many examples an optimizer step sees. So the
    dataset is tokenised and truncated to ``max_length`` as usual, and only the collator is
    switched afterwards: the same examples per step, no padding tokens computed. The model
    gets ``position_ids`` that restart at 0 for each example and no attention mask, from which
    transformers builds a block-diagonal causal mask (examples never attend to each other).
    """
    trainer.data_collator.padding_free = True
    trainer.padding_free = True


def _make_callback(progress: Progress, should_stop: Callable[[], bool], has_eval: bool) -> Any:
    from transformers import TrainerCallback

    class _ProgressCallback(TrainerCallback):
        """Turns Trainer logs into progress events, adds epoch-end validation, handles cancel."""

        def __init__(self) -> None:
            self.cancelled = False
            self.last_eval_step = -1
            self.last_time = time.perf_counter()
            self.last_tokens: float | None = None
            self.history: list[dict[str, Any]] = []

        def _emit(self, event: dict[str, Any]) -> None:
            self.history.append(event)
            progress(event)

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.last_time = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if should_stop():
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = True  # a cancelled run can be resumed from here

        def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if has_eval and state.global_step != self.last_eval_step and not self.cancelled:
                control.should_evaluate = True

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            self.last_eval_step = state.global_step
            metrics = metrics or {}
            acc = metrics.get("eval_mean_token_accuracy")
            if acc is None:  # DPO / KTO report reward accuracies instead of token accuracy
                acc = metrics.get("eval_rewards/accuracies")
            self._emit({
                "event": "eval", "step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                "eval_loss": metrics.get("eval_loss"), "eval_token_accuracy": acc,
            })

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = logs or {}
            if "loss" not in logs or any(k.startswith("eval_") for k in logs):
                return  # eval logs go through on_evaluate; the final summary is handled by the caller
            now = time.perf_counter()
            tokens = logs.get("num_tokens")
            tps = None
            if tokens is not None:
                delta = tokens - (self.last_tokens or 0.0)
                tps = delta / max(now - self.last_time, 1e-9)
                self.last_tokens = tokens
            self.last_time = now
            self._emit({
                "event": "step", "step": state.global_step, "total_steps": state.max_steps,
                "epoch": round(state.epoch or 0.0, 4), "train_loss": logs.get("loss"),
                "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                "token_accuracy": logs.get("mean_token_accuracy"), "tokens_per_s": tps,
            })

    return _ProgressCallback()


def run_training(
    cfg: Config,
    run_dir: Path,
    data: TrainingData,
    progress: Progress,
    should_stop: Callable[[], bool],
    method: str = "sft",
    resume_from: Path | None = None,
) -> TrainResult:
    """Train a LoRA adapter (or the full model) with ``method`` on ``data``; save it to ``run_dir/adapter``.

    ``progress`` receives ``start`` / ``step`` / ``eval`` / ``end`` events; ``should_stop`` is
    polled after every optimizer step (cancel). ``resume_from`` continues from a checkpoint
    with its optimizer, scheduler and RNG state.
    """
    logging.getLogger("transformers").setLevel(logging.ERROR)
    run_dir = Path(run_dir)
    has_eval = {"sft": bool(data.sft_eval or data.general_eval), "dpo": bool(data.dpo_eval),
                "kto": len(data.kto_eval) > 1}[method]
    callback = _make_callback(progress, should_stop, has_eval)
    started = time.perf_counter()
    trainer = build_trainer(cfg, run_dir, data, method, [callback])
    _quiet(trainer)
    total = trainer.state.max_steps or _planned_steps(trainer)
    progress({
        "event": "start", "method": method, "total_steps": total, "train_examples": len(trainer.train_dataset),
        "eval_examples": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        "bf16": bool(trainer.args.bf16), "resumed_from": resume_from.name if resume_from else None,
    })
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    runtime = time.perf_counter() - started
    status = "cancelled" if callback.cancelled else "completed"
    adapter_dir: Path | None = None
    if status == "completed":
        adapter_dir = run_dir / "adapter"
        staging = run_dir / ".adapter.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        trainer.model.save_pretrained(staging)
        trainer.processing_class.save_pretrained(staging)
        shutil.rmtree(adapter_dir, ignore_errors=True)
        os.rename(staging, adapter_dir)  # a half-written adapter is never registered
    steps = [e for e in callback.history if e["event"] == "step"]
    evals = [e for e in callback.history if e["event"] == "eval"]
    tps = [e["tokens_per_s"] for e in steps if e.get("tokens_per_s")]
    metrics = {
        "train_loss": output.metrics.get("train_loss") if output else None,
        "final_step_loss": steps[-1]["train_loss"] if steps else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "eval_token_accuracy": evals[-1]["eval_token_accuracy"] if evals else None,
        "steps": trainer.state.global_step,
        "runtime_s": round(runtime, 2),
        "train_runtime_s": output.metrics.get("train_runtime") if output else None,
        "tokens_per_s": round(sum(tps) / len(tps), 1) if tps else None,
    }
    progress({"event": "end", "status": status, "step": trainer.state.global_step, **{k: v for k, v in metrics.items() if k != "steps"}})
    return TrainResult(status=status, adapter_dir=adapter_dir, method=method, metrics=metrics, history=callback.history)


def _quiet(trainer: Any) -> None:
    # disable_tqdm makes the Trainer print every log dict; progress goes through our events.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _planned_steps(trainer: Any) -> int:
    import math

    per_epoch = math.ceil(len(trainer.train_dataset) / trainer.args.per_device_train_batch_size)
    return int(per_epoch * trainer.args.num_train_epochs)
