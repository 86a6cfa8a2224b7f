"""A run's losses and metrics, also reported to the experiment trackers ML teams already run.

``models.deepseek.report_to`` lists them (none by default):

- ``tensorboard``: an event file per run under ``<data_dir>/tensorboard/<run_id>/`` (``tensorboard
  --logdir data/tensorboard``). Scalars: ``train/loss``, ``train/learning_rate``,
  ``train/grad_norm``, ``train/token_accuracy`` per optimizer step, ``eval/loss`` per validation,
  and at the end ``gate/<check>_before`` / ``gate/<check>_after`` and ``gate/promoted``.
- ``mlflow``: MLflow's local file store under ``<data_dir>/mlruns`` (``MLFLOW_ALLOW_FILE_STORE=true
  mlflow ui --backend-store-uri data/mlruns`` with a full MLflow install), experiment ``dmac-learner``, one MLflow run per training run (named by its run
  id; a resumed run reports into the same one): the hyper-parameters as params, the same
  metrics with the same names (``/`` becomes ``_``), and the run's end state.

The events are the ones the run writes to its own ``events.jsonl``, so the trackers show exactly
what the Training and Metrics pages show. A tracker that fails never fails the run: its error is
kept in ``run.json`` (``trackers``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TRACKERS = ("tensorboard", "mlflow")
EXPERIMENT = "dmac-learner"

# event field -> metric name, for "step" and "eval" events
_STEP_METRICS = {"train_loss": "train/loss", "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm",
                 "token_accuracy": "train/token_accuracy"}
_EVAL_METRICS = {"eval_loss": "eval/loss"}


class TrackerReport:
    """Reports one training run to the trackers in ``report_to``; see the module docstring."""

    def __init__(self, report_to: list[str], data_dir: Path, run_id: str, params: dict[str, Any]) -> None:
        self.run_id = run_id
        self.errors: dict[str, str] = {}
        self.where: dict[str, str] = {}
        self._writer: Any = None
        self._mlflow: Any = None
        self._mlflow_run = ""
        self._step = 0
        if "tensorboard" in report_to:
            self._guard("tensorboard", lambda: self._open_tensorboard(Path(data_dir) / "tensorboard" / run_id))
        if "mlflow" in report_to:
            self._guard("mlflow", lambda: self._open_mlflow(Path(data_dir) / "mlruns", params))

    # -- what the run reports -------------------------------------------------------------------
    def event(self, event: dict[str, Any]) -> None:
        """One progress event of the run (as written to ``events.jsonl``)."""
        kind = event.get("event")
        fields = _STEP_METRICS if kind == "step" else _EVAL_METRICS if kind == "eval" else None
        if fields is None:
            return
        self._step = int(event.get("step") or self._step)
        values = {name: float(event[key]) for key, name in fields.items() if isinstance(event.get(key), (int, float))}
        self._log(values, self._step)

    def finish(self, record: dict[str, Any]) -> dict[str, Any]:
        """Report the run's end (its gate checks, whether it was promoted, its state), close the
        trackers and return what to keep in ``run.json``: where each wrote, and any error."""
        values: dict[str, float] = {}
        for check in ((record.get("gate") or {}).get("checks") or []):
            for side in ("before", "after"):
                if isinstance(check.get(side), (int, float)):
                    values[f"gate/{check['check']}_{side}"] = float(check[side])
        if record.get("state") == "completed":
            values["gate/promoted"] = 1.0 if record.get("promoted") else 0.0
        self._log(values, self._step)
        if self._writer is not None:
            self._guard("tensorboard", self._writer.close)
        if self._mlflow is not None:
            status = {"completed": "FINISHED", "cancelled": "KILLED"}.get(str(record.get("state")), "FAILED")
            self._guard("mlflow", lambda: self._mlflow.set_terminated(self._mlflow_run, status=status))
        return {"where": self.where, **({"errors": self.errors} if self.errors else {})}

    # -- the trackers ---------------------------------------------------------------------------
    def _open_tensorboard(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir))
        self.where["tensorboard"] = str(log_dir)

    def _open_mlflow(self, store: Path, params: dict[str, Any]) -> None:
        # MLflow 3 keeps the local file store (no database to run) behind this switch
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        store.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=store.resolve().as_uri())
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
        earlier = client.search_runs([experiment_id], filter_string=f"tags.`dmac.run_id` = '{self.run_id}'")
        if earlier:  # a resumed run goes on in the same MLflow run
            self._mlflow_run = earlier[0].info.run_id
            client.update_run(self._mlflow_run, status="RUNNING")
        else:
            run = client.create_run(experiment_id, run_name=self.run_id, tags={"dmac.run_id": self.run_id})
            self._mlflow_run = run.info.run_id
            for key, value in _flat(params).items():
                client.log_param(self._mlflow_run, key, value)
        self._mlflow = client
        self.where["mlflow"] = f"{store.resolve().as_uri()} (experiment {EXPERIMENT}, run {self._mlflow_run})"

    def _log(self, values: dict[str, float], step: int) -> None:
        if not values:
            return
        if self._writer is not None:
            def tensorboard() -> None:
                for name, value in values.items():
                    self._writer.add_scalar(name, value, step)
                self._writer.flush()
            self._guard("tensorboard", tensorboard)
        if self._mlflow is not None:
            def mlflow() -> None:
                for name, value in values.items():
                    self._mlflow.log_metric(self._mlflow_run, name.replace("/", "_"), value, step=step)
            self._guard("mlflow", mlflow)

    def _guard(self, tracker: str, action: Any) -> None:
        if tracker in self.errors:
            return  # it failed once: the run goes on without it
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a tracker must never fail the training run
            self.errors[tracker] = f"{type(exc).__name__}: {str(exc)[:300]}"
            if tracker == "tensorboard":
                self._writer = None
            else:
                self._mlflow = None


def _flat(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested hyper-parameters as MLflow params: ``lora.r`` = ``16``; lists as JSON."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out
