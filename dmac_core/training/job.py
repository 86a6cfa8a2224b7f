"""The background training job: one run at a time, progress events, cancel, resume, gate.

Each run lives in ``<data_dir>/runs/<run_id>/``:

- ``run.json``    the run's record: config in effect (hyper-parameters), lineage, state,
                  metrics, gate decision, version created; rewritten atomically on changes;
- ``events.jsonl`` every progress event, one JSON object a line, flushed as it happens;
- ``data.json``   the exact training data (so a resumed run trains on the same items);
- ``checkpoints/`` Trainer checkpoints (deleted once the version is registered).

One job at a time: a thread lock inside the process and ``flock`` on
``<data_dir>/runs/.train.lock`` across processes, held for the whole run (the kernel releases
it if the process dies, so a crash never leaves a stale lock).

A completed run is registered as a new model version. It is promoted (served without a
restart) only if it passes the promotion gate (:mod:`.gate`): measured through the runtime that
serves chat, it answers the rated questions better than the served version, keeps the general
knowledge the served version had, and does not over-fit. The gate's evidence is kept in
``run.json`` and the version's metadata.

Resume after a crash (SIGKILL included): the newest *complete* checkpoint is taken, torn or
newer checkpoint directories are deleted, and ``events.jsonl`` is cut back to the
checkpoint's step (events of steps trained after it are dropped, since those steps are
trained again), so the resumed run's events have every step exactly once.

Textual feedback: when a ``teacher`` callable is given and ``models.deepseek.teacher`` is
set, the run first asks it to rewrite commented answers (cached; see :mod:`.teacher`) and
trains on the rewrites too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..config import LEARNER, Config
from ..fsio import atomic_write_json, atomic_write_text, open_locked, read_jsonl
from ..insights.embeddings import get_embedder
from ..learner.base_model import prepare_base
from ..learner.registry import ModelRegistry
from ..learner.scope import taught_prompts, write_scope
from ..logs.records import format_ts, utc_now
from ..logs.store import LearningStore
from ..signals.judge_agreement import qualified_labels
from .dataset import NotEnoughData, TrainingData, build_dataset, check_enough, choose_method
from .gate import PromotionGate, general_validation
from .replay import apply_replay
from .teacher import RewriteCache, Teacher, apply_teacher
from .trackers import TrackerReport
from .trainer import checkpoint_step, discard_checkpoints_after, latest_checkpoint, run_training
from .transfer import apply_start, resolve_start, transfer_metadata

# Defaults for settings the config may not carry yet (read with getattr so a config key wins).
ACTIVE_STATES = ("queued", "running")


class JobAlreadyRunning(RuntimeError):
    """A second training run was refused because one is already running."""


class LearningDisabled(RuntimeError):
    """Training was refused because ``models.deepseek.learning_enabled`` is false."""


class NothingToResume(RuntimeError):
    """``resume`` was asked for but no run has a complete checkpoint."""


@dataclass
class RunInfo:
    """What :meth:`TrainingJobManager.start` started."""

    run_id: str
    run_dir: Path
    method: str
    resumed_from: str | None = None


@dataclass
class JobSnapshot:
    """A consistent copy of the job's state, cheap enough to read every second."""

    run_id: str | None = None
    state: str = "idle"  # idle | queued | running | completed | failed | cancelled
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    train_loss: float | None = None
    eval_loss: float | None = None
    eval_token_accuracy: float | None = None
    tokens_per_s: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    error: str | None = None
    version: str | None = None
    promoted: bool = False

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class _PhaseClock:
    """Seconds spent in each phase of a run, written into ``record["timings"]`` as they end."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.timings = record.setdefault("timings", {})
        self.started = self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.timings[phase] = round(now - self.last, 1)
        self.timings["total_s"] = round(now - self.started, 1)
        self.last = now


def hyper_parameters(config: Config) -> dict[str, Any]:
    """The learner's training settings in effect (printed and saved with every run)."""
    learner = config.learner
    keys = ("learning_rate", "batch_size", "epochs", "evaluation_interval", "method", "min_rating_for_sft",
            "max_rating_for_negative", "validation_fraction", "min_examples", "max_length", "seed", "precision",
            "checkpoint_interval", "finetune", "padding_free", "promotion_tolerance", "teacher", "start_from")
    params = {k: getattr(learner, k) for k in keys}
    params["lora"] = learner.lora.model_dump()
    params["gate"] = learner.gate.model_dump()
    params["scope"] = learner.scope.model_dump()
    params["base_model"] = str(config.base_model_path())
    return params


class TrainingJobManager:
    """Starts, watches and cancels training runs of the local learner."""

    def __init__(
        self,
        config: Config,
        store: LearningStore,
        registry: ModelRegistry,
        gate: PromotionGate | None = None,
        after_version: Callable[[str, str], None] | None = None,
        teacher: Teacher | None = None,
    ) -> None:
        """``gate`` decides whether a finished run's version is served (the workbench builds
        it over its evaluator; see :mod:`.gate`); without one, versions are registered and
        never promoted automatically.

        ``after_version(new_version, previous_version)`` runs in the job thread once a new
        version is registered and gated (the workbench loads the served version there, so the
        first chat answer after a promotion does not wait); its failure is recorded in
        run.json but does not fail the run.

        ``teacher(prompt, answer, feedback) -> str | None`` rewrites commented answers before
        a run (used only when ``models.deepseek.teacher`` is set; see :mod:`.teacher`)."""
        self.config = config
        self.store = store
        self.registry = registry
        self.gate = gate
        self.after_version = after_version
        self.teacher = teacher
        self.rewrites = RewriteCache(config.data_path / "teacher" / "rewrites.jsonl")
        self.runs_dir = config.data_path / "runs"
        self._lock = threading.RLock()  # start() holds it while prepare_run() sets the snapshot
        self._thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._snapshot = JobSnapshot()
        self._lock_fd: int | None = None

    # -- public API ----------------------------------------------------------------------
    def start(self, trigger: str = "manual", user: str = "", **options: Any) -> RunInfo:
        """Start a run in a background thread and return at once; ``options`` are
        :meth:`prepare_run`'s (``method``, ``epochs``, ``resume``, ``start_from``)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                snap = self._snapshot
                raise JobAlreadyRunning(
                    f"A training run is already running ({snap.run_id}, step {snap.step}/{snap.total_steps}). "
                    "Wait for it to finish or cancel it first."
                )
            info, config, data, record = self.prepare_run(trigger, user, **options)
            self._thread = threading.Thread(
                target=self.execute, args=(info, config, data, record), name=f"train-{info.run_id}", daemon=True
            )
            self._thread.start()
        return info

    def prepare_run(
        self,
        trigger: str = "manual",
        user: str = "",
        method: str | None = None,
        epochs: int | None = None,
        resume: bool = False,
        start_from: str | None = None,
    ) -> tuple[RunInfo, Config, TrainingData, dict[str, Any]]:
        """Take the training lock and prepare a run (its data, start point, directory and
        record) without starting it; :meth:`execute` runs it and releases the lock. ``start``
        does both in a thread; a launcher of several processes calls them itself.

        ``method`` and ``epochs`` override the config for this run; ``start_from`` overrides
        ``models.deepseek.start_from`` ("base", "served", a version id or a model path; see
        :mod:`.transfer`); ``resume`` continues the latest interrupted run instead.

        Raises :class:`LearningDisabled`, :class:`JobAlreadyRunning`, :class:`NotEnoughData`,
        :class:`~.transfer.StartError` or, with ``resume``, :class:`NothingToResume`; nothing is
        started or held then."""
        if not self.config.learner.learning_enabled:
            raise LearningDisabled(
                f"Training is switched off: models.deepseek.learning_enabled is false in {self.config.source}. "
                "Set it to true to train the local learner."
            )
        self._acquire_process_lock()
        try:
            info, config, data, record = self._prepare(trigger, user, method, epochs, resume, start_from)
        except BaseException:
            self._release_process_lock()
            raise
        self._cancel.clear()
        with self._lock:
            self._snapshot = JobSnapshot(
                run_id=info.run_id, state="queued", total_steps=record.get("total_steps") or 0,
                events=read_jsonl(info.run_dir / "events.jsonl") if resume else [],
                message=f"Queued ({info.method}, trigger: {trigger})",
            )
        return info, config, data, record

    def status(self) -> JobSnapshot:
        """A copy of the current (or last) run's state; safe to call from any thread."""
        with self._lock:
            snap = self._snapshot
            return JobSnapshot(**{**asdict(snap), "events": list(snap.events)})

    def cancel(self) -> bool:
        """Ask the running job to stop after the current optimizer step; True if one was running."""
        with self._lock:
            running = self._thread is not None and self._thread.is_alive()
        if running:
            self._cancel.set()
            self._update(message="Cancelling after the current step…")
        return running

    def wait(self, timeout: float | None = None) -> JobSnapshot:
        """Block until the current run ends (or ``timeout`` seconds pass); return its snapshot."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def is_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def train_blocking(self, explain_refusal: bool = False, **kwargs: Any) -> dict[str, Any]:
        """Start a run, wait for it and return its summary (the run's ``run.json``).

        ``explain_refusal``: when no run can start (too few rated answers, learning off, a run
        already going, a bad start point), return ``{"state": "not started", "message": …}``
        instead of raising."""
        try:
            info = self.start(**kwargs)
        except (NotEnoughData, LearningDisabled, JobAlreadyRunning, NothingToResume, ValueError) as exc:
            if not explain_refusal:
                raise
            return {"run_id": None, "state": "not started", "version": None, "promoted": False, "message": str(exc)}
        self.wait()
        return self.run_summary(info.run_id)

    def runs(self) -> list[dict[str, Any]]:
        """Past and current runs (their ``run.json``), newest first."""
        out = []
        for path in sorted(self.runs_dir.glob("*/run.json"), reverse=True):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                out.append({"run_id": path.parent.name, "state": "unreadable"})
        return out

    def run_summary(self, run_id: str) -> dict[str, Any]:
        return json.loads((self.runs_dir / run_id / "run.json").read_text(encoding="utf-8"))

    def run_events(self, run_id: str) -> list[dict[str, Any]]:
        """Every progress event of a run, in order (a torn last line is skipped)."""
        return read_jsonl(self.runs_dir / run_id / "events.jsonl")

    # -- preparation -----------------------------------------------------------------------
    def _prepare(
        self, trigger: str, user: str, method: str | None, epochs: int | None, resume: bool, start_from: str | None
    ) -> tuple[RunInfo, Config, TrainingData, dict[str, Any]]:
        self._mark_interrupted_runs()
        if resume:
            return self._prepare_resume(trigger, user)
        config = self.config.model_copy(deep=True)
        if epochs is not None:
            config.learner.epochs = epochs
        if method is not None:
            config.learner.method = method  # type: ignore[assignment]
        start = resolve_start(start_from or config.learner.start_from, config, self.registry)  # StartError: nothing started
        apply_start(config, start)
        # Rewrites cached by earlier runs count now; new ones are asked for in the job thread.
        # NotEnoughData: nothing started
        data = build_dataset(self.store, config.learner, rewrites=self.rewrites.load(),
                             judge_labels=qualified_labels(self.store, config.judge))
        chosen = choose_method(data, config.learner) if config.learner.method == "auto" else config.learner.method
        check_enough(data, config.learner, chosen)
        if self.gate is not None and chosen == "sft":  # SuiteFileError: nothing started
            general = self.gate.general_items()
            data.general_eval = general_validation(general) if general else []
            data.lineage.setdefault("counts", {})["general_eval"] = len(data.general_eval)
        run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True)
        atomic_write_json(run_dir / "data.json", data.to_dict())
        (run_dir / "events.jsonl").touch()
        record = {
            "run_id": run_id, "state": "queued", "trigger": trigger, "user": user,
            "method": chosen, "created": format_ts(utc_now()), "started": None, "finished": None,
            "hyper_parameters": hyper_parameters(config), "lineage": data.lineage,
            "metrics": {}, "version": None, "promoted": False, "gate": None, "message": "", "error": None,
            "champion_at_start": self.registry.served_id(), "start": start.to_dict(),
        }
        atomic_write_json(run_dir / "run.json", record)
        print(f"[train] run {run_id}: {json.dumps(record['hyper_parameters'])}", flush=True)
        return RunInfo(run_id, run_dir, chosen), config, data, record

    def _teacher_enabled(self, config: Config) -> bool:
        name = config.learner.teacher
        return self.teacher is not None and bool(name) and name in config.models and name != LEARNER

    def _apply_teacher(self, config: Config, info: RunInfo, data: TrainingData, record: dict[str, Any],
                       on_event: Callable[[dict[str, Any]], None]) -> TrainingData:
        """Ask the teacher for pending rewrites; rebuild the data when it wrote any."""
        assert self.teacher is not None and config.learner.teacher
        self._update(message=f"Asking {config.learner.teacher} to apply the analysts' comments…")
        outcome = apply_teacher(self.store, self.rewrites, self.teacher, config.learner.teacher,
                                cancelled=self._cancel.is_set)
        record["teacher"] = outcome
        if outcome["pending"]:
            on_event({"event": "teacher", **outcome})
        if not outcome["rewritten"]:
            return data
        rebuilt = build_dataset(self.store, config.learner, method=info.method, rewrites=self.rewrites.load(),
                                judge_labels=qualified_labels(self.store, config.judge))
        atomic_write_json(info.run_dir / "data.json", rebuilt.to_dict())
        record["lineage"] = rebuilt.lineage
        return rebuilt

    def _prepare_resume(self, trigger: str, user: str) -> tuple[RunInfo, Config, TrainingData, dict[str, Any]]:

        for record in self.runs():
            if record.get("state") not in ("cancelled", "failed", "interrupted"):
                continue
            run_dir = self.runs_dir / record["run_id"]
            checkpoint = latest_checkpoint(run_dir)
            if checkpoint is None:
                continue
            data = TrainingData.from_dict(json.loads((run_dir / "data.json").read_text(encoding="utf-8")))
            config = self.config.model_copy(deep=True)
            for key, value in record["hyper_parameters"].items():
                if key == "lora" or key not in type(config.learner).model_fields:
                    continue
                setattr(config.learner, key, value)  # base_model and start_from too: the pinned start
            config.learner.lora = type(config.learner.lora).model_validate(record["hyper_parameters"]["lora"])
            step = checkpoint_step(checkpoint) or 0
            discarded = discard_checkpoints_after(run_dir, checkpoint)
            # Steps after the checkpoint are trained again: drop their events so none is duplicated;
            # an earlier "end" (cancelled) is dropped too, since the run has not ended after all.
            events = self.run_events(record["run_id"])
            kept = [e for e in events if e.get("event") != "end"
                    and (e.get("event") not in ("step", "eval") or int(e.get("step") or 0) <= step)]
            atomic_write_text(run_dir / "events.jsonl", "".join(json.dumps(e) + "\n" for e in kept))
            record.update(state="queued", resumed_from=checkpoint.name, trigger=trigger, user=user or record.get("user"))
            record.setdefault("resumes", []).append(
                {"ts": format_ts(utc_now()), "checkpoint": checkpoint.name, "discarded": discarded,
                 "events_dropped": len(events) - len(kept)}
            )
            atomic_write_json(run_dir / "run.json", record)
            info = RunInfo(record["run_id"], run_dir, record["method"], resumed_from=str(checkpoint))
            return info, config, data, record
        raise NothingToResume("No cancelled or interrupted run with a complete checkpoint to resume.")

    def _mark_interrupted_runs(self) -> None:
        # We hold the cross-process lock, so a run still marked active was cut off by a crash.
        for record in self.runs():
            if record.get("state") in ACTIVE_STATES:
                record.update(state="interrupted", message="The process running it stopped; resume to continue.")
                atomic_write_json(self.runs_dir / record["run_id"] / "run.json", record)

    # -- the run itself (background thread) ----------------------------------------------
    def execute(
        self,
        info: RunInfo,
        config: Config,
        data: TrainingData,
        record: dict[str, Any],
        train: Callable[..., Any] = run_training,
        before_train: Callable[[Config, TrainingData, str], None] | None = None,
        register: bool = True,
        gate: bool = True,
    ) -> None:
        """Run a prepared run (see :meth:`prepare_run`) in the calling thread, every step "Train
        now" takes: the base model, the teacher's rewrites, replayed answers, training, then the
        new version registered with its scope, measured by the gate, promoted if it passes and
        loaded for chat. Releases the training lock at the end; the outcome is in ``run.json``.

        A launcher of several processes passes ``train`` (its rank's share of the same steps)
        and ``before_train(config, data, method)``, which hands the final data to the other
        ranks; ``register=False`` trains only; ``gate=False`` registers without promoting."""
        events_path = info.run_dir / "events.jsonl"
        clock = _PhaseClock(record)  # where the run's time goes, kept in run.json ("timings")
        trackers = TrackerReport(config.learner.report_to, config.data_path, info.run_id,
                                 record["hyper_parameters"]) if config.learner.report_to else None
        try:
            with open(events_path, "a", encoding="utf-8") as events_file:

                def on_event(event: dict[str, Any]) -> None:
                    event = {**event, "ts": format_ts(utc_now())}
                    events_file.write(json.dumps(event, default=str) + "\n")
                    events_file.flush()
                    self._on_event(event)
                    if trackers is not None:  # TensorBoard / MLflow see what the pages see
                        trackers.event(event)

                record.update(state="running", started=record.get("started") or format_ts(utc_now()))
                atomic_write_json(info.run_dir / "run.json", record)
                self._update(state="running", message=f"Training ({info.method})…")
                # A new data directory: the bundled base model is converted on its first use.
                prepare_base(self.config.base_model_path(), bundled=self.config.learner.base_model is None,
                             progress=lambda msg: self._update(message=msg))
                if not info.resumed_from and self._teacher_enabled(config):
                    data = self._apply_teacher(config, info, data, record, on_event)
                    atomic_write_json(info.run_dir / "run.json", record)
                    self._update(message=f"Training ({info.method})…")
                if not info.resumed_from and apply_replay(config, data, info.method, lambda msg: self._update(message=msg)):
                    # data.json is what a resume trains on: it includes the replayed answers
                    atomic_write_json(info.run_dir / "data.json", data.to_dict())
                    record["lineage"] = data.lineage
                    atomic_write_json(info.run_dir / "run.json", record)
                    self._update(message=f"Training ({info.method})…")
                resume_from = Path(info.resumed_from) if info.resumed_from else None
                clock.lap("prepare_s")  # base model, teacher rewrites, replayed answers
                if before_train is not None:
                    before_train(config, data, info.method)
                result = train(config, info.run_dir, data, on_event, self._cancel.is_set, info.method, resume_from)
                clock.lap("train_s")  # loading the model, training and validation, saving the adapter
            record["metrics"] = result.metrics
            if result.status == "cancelled":
                record.update(state="cancelled", message="Cancelled; resume to continue from the last checkpoint.")
            elif not register or result.adapter_dir is None:
                record.update(state="completed", message="Trained; no version registered (asked not to).")
            else:
                self._update(message="Registering the new version…")
                self._register_and_gate(config, data, info, result.adapter_dir, record, gate)
                clock.lap("gate_s")  # registering, exporting for the runtime, the gate's answers and losses
                self._after_version(record)
                clock.lap("serve_s")  # loading the served version for chat
                record["state"] = "completed"
                shutil.rmtree(info.run_dir / "checkpoints", ignore_errors=True)
        except NotEnoughData as exc:
            record.update(state="failed", message=str(exc), error=str(exc))
        except Exception as exc:  # the UI shows it; the traceback goes to run.json for debugging
            record.update(state="failed", message=f"Training failed: {exc}", error=traceback.format_exc())
        finally:
            record["finished"] = format_ts(utc_now())
            if trackers is not None:
                record["trackers"] = trackers.finish(record)
            atomic_write_json(info.run_dir / "run.json", record)
            self._update(state=record["state"], message=record.get("message", ""), error=record.get("error"),
                         version=record.get("version"), promoted=bool(record.get("promoted")))
            self._release_process_lock()

    def _register_and_gate(
        self, config: Config, data: TrainingData, info: RunInfo, adapter_dir: Path | None, record: dict[str, Any],
        gate_it: bool = True,
    ) -> None:
        assert adapter_dir is not None
        metadata = {
            "base_model": str(config.base_model_path()), "method": info.method, "run_id": info.run_id,
            "hyper_parameters": record["hyper_parameters"], "lineage": data.lineage, "metrics": record["metrics"],
            **transfer_metadata(record.get("start")),
        }
        if config.learner.finetune == "lora":  # the questions it was taught: served to them (see backends.scope)
            prompts = taught_prompts({"sft": data.sft_train, "dpo": data.dpo, "kto": data.kto}[info.method])
            self._update(message=f"Recording what the new version was taught ({len(prompts)} questions)…")
            write_scope(adapter_dir, prompts, get_embedder(config.data_path))
            metadata["scope"] = {"questions": len(prompts)}
        version = self.registry.register(adapter_dir, metadata)
        record["version"] = version.id
        champion = self.registry.served_id()
        if self.gate is None or not gate_it:
            why = "no promotion gate is set up for this job manager" if self.gate is None else "the gate was not asked for"
            gate: dict[str, Any] = {"champion": champion, "candidate": version.id, "passed": False, "checks": [],
                                    "reason": why}
        else:
            gate = self.gate.run(version.id, champion, data, progress=lambda msg: self._update(message=msg))
        record["gate"] = gate
        record["evaluations"] = gate.get("evals")
        self.registry.update_metadata(version.id, gate=gate)
        if gate["passed"]:
            self.registry.promote(version.id, reason=f"run {info.run_id}: passed the gate")
            record.update(promoted=True, message=f"Version {version.id} is now served. {gate['reason']}.")
        else:
            record.update(promoted=False, message=(
                f"Version {version.id} was registered but NOT promoted — {gate['reason']}. "
                f"{champion} stays served."
            ))

    def _after_version(self, record: dict[str, Any]) -> None:
        if self.after_version is None or not record.get("version"):
            return
        try:
            self.after_version(record["version"], record["gate"]["champion"])
        except Exception as exc:  # a report or a warm-up, not part of the model: keep the run
            record["after_version_error"] = f"{type(exc).__name__}: {exc}"

    # -- snapshot updates ----------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            snap = self._snapshot
            snap.events.append(event)
            kind = event.get("event")
            if kind == "start":
                snap.total_steps = int(event.get("total_steps") or 0)
            elif kind == "step":
                snap.step = int(event["step"])
                snap.total_steps = int(event.get("total_steps") or snap.total_steps)
                snap.epoch = float(event.get("epoch") or 0.0)
                snap.train_loss = event.get("train_loss")
                snap.tokens_per_s = event.get("tokens_per_s")
                snap.message = f"Step {snap.step}/{snap.total_steps}"
            elif kind == "eval":
                snap.eval_loss = event.get("eval_loss")
                snap.eval_token_accuracy = event.get("eval_token_accuracy")

    def _update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._snapshot, key, value)

    # -- cross-process lock --------------------------------------------------------------
    def _acquire_process_lock(self) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = open_locked(self.runs_dir / ".train.lock", blocking=False)
        except BlockingIOError:
            raise JobAlreadyRunning(
                "Another process is training the local learner right now (lock "
                f"{self.runs_dir / '.train.lock'}). Wait for it to finish or cancel it there."
            ) from None
        self._lock_fd = fd

    def _release_process_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing releases the flock
