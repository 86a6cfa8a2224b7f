"""A run's losses and metrics reported to TensorBoard and MLflow, read back with their own readers."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dmac_core.config import Config
from dmac_core.system import LearningSystem

from .gate_doubles import scripted_gate
from .test_training import seed_ratings


def trained(config: Config) -> tuple[LearningSystem, dict, list[dict]]:
    system = LearningSystem(config)
    system.jobs.gate = scripted_gate(config, system.registry)  # mechanics: the tiny model learns nothing visible
    seed_ratings(system.store)
    info = system.jobs.start()
    assert system.jobs.wait(120).state == "completed"
    return system, system.jobs.run_summary(info.run_id), system.jobs.run_events(info.run_id)


def test_no_tracker_by_default(make_config: Callable[..., Config]) -> None:
    config = make_config(epochs=1)
    assert config.learner.report_to == []
    _, run, _ = trained(config)
    assert "trackers" not in run
    assert not (config.data_path / "tensorboard").exists() and not (config.data_path / "mlruns").exists()


def test_tensorboard_and_mlflow_receive_what_the_run_logged(make_config: Callable[..., Config]) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(epochs=2, report_to=["tensorboard", "mlflow"])
    _, run, events = trained(config)
    assert set(run["trackers"]["where"]) == {"tensorboard", "mlflow"} and "errors" not in run["trackers"]
    steps = [e for e in events if e["event"] == "step"]
    evals = [e for e in events if e["event"] == "eval"]
    assert steps and evals

    # TensorBoard, read with TensorBoard's own event reader
    board = EventAccumulator(str(config.data_path / "tensorboard" / run["run_id"]))
    board.Reload()
    losses = board.Scalars("train/loss")
    assert [s.step for s in losses] == [e["step"] for e in steps]
    assert [s.value for s in losses] == [float(__import__("numpy").float32(e["train_loss"])) for e in steps]
    assert [s.step for s in board.Scalars("eval/loss")] == [e["step"] for e in evals]
    checks = {c["check"]: c for c in run["gate"]["checks"]}
    assert board.Scalars("gate/rated_after")[0].value == float(__import__("numpy").float32(checks["rated"]["after"]))
    assert board.Scalars("gate/promoted")[0].value == (1.0 if run["promoted"] else 0.0)

    # MLflow's local file store, read with MLflow's own client
    client = MlflowClient(tracking_uri=(config.data_path / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("dmac-learner")
    [found] = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == run["run_id"] and found.info.status == "FINISHED"
    assert found.data.params["learning_rate"] == str(config.learner.learning_rate)
    assert found.data.params["lora.r"] == str(config.learner.lora.r)
    history = client.get_metric_history(found.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (e["step"], e["train_loss"]) for e in steps]
    assert [m.step for m in client.get_metric_history(found.info.run_id, "eval_loss")] == [e["step"] for e in evals]
    assert found.data.metrics["gate_rated_after"] == checks["rated"]["after"]


def test_a_tracker_that_fails_never_fails_the_run(make_config: Callable[..., Config], tmp_path: Path) -> None:
    config = make_config(epochs=1, report_to=["mlflow"])
    (config.data_path).mkdir(parents=True, exist_ok=True)
    (config.data_path / "mlruns").write_text("not a directory")  # the store cannot be created
    _, run, _ = trained(config)
    assert run["state"] == "completed"
    assert set(run["trackers"]["errors"]) == {"mlflow"} and run["trackers"]["where"] == {}
