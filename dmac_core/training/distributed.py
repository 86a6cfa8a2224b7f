"""The training entry point for several processes: ``torchrun`` or ``accelerate launch``.

    torchrun --nproc_per_node=2 -m dmac_core.training.distributed --config config/config.yaml
    # the same with accelerate (CPU, 2 processes):
    accelerate launch --cpu --num_processes 2 -m dmac_core.training.distributed --config config/config.yaml
    # across two machines (run on each, NODE_RANK 0 and 1, MASTER = the first machine's address):
    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=2 --master_addr=$MASTER --master_port=29500 \\
        -m dmac_core.training.distributed --config config/config.yaml

Started without a launcher it is an ordinary single-process run (world size 1), so the same
command line trains on one machine too.

What every process does:

1. joins the process group (``gloo``: the CPU backend; ``nccl`` would need GPUs) — HF's
   Trainer would pick gloo on CPU by itself, we create the group first so it is explicit;
2. gets the training data from rank 0, which builds it from the store once and broadcasts it,
   so every rank trains on exactly the same items in the same order (the Trainer's distributed
   sampler then gives each rank its share of every global batch);
3. trains with ``per_device_batch = batch_size / world_size``: ``models.deepseek.batch_size``
   stays the *global* batch, so one process and N processes take the same optimizer steps;
4. rank 0 alone writes the run's files and registers the new version (and, with ``--gate``,
   applies the promotion gate); the other ranks write their (identical) adapter copy to a
   scratch directory and exit.

The run directory is ``<data_dir>/runs/<run_id>/`` with ``run.json``, ``events.jsonl`` and
``data.json`` as for runs started by :class:`~dmac_core.training.job.TrainingJobManager`.
It takes the same cross-process training lock on rank 0, so it never overlaps a run started
from the workbench.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import Config, load_config
from ..fsio import atomic_write_json
from ..learner.registry import ModelRegistry
from ..logs.records import format_ts, utc_now
from ..logs.store import LearningStore
from ..system import LearningSystem
from .dataset import NotEnoughData, TrainingData, build_dataset, check_enough, choose_method
from .job import TrainingJobManager, hyper_parameters
from .replay import apply_replay
from .trainer import run_training
from .transfer import StartPoint, apply_start, resolve_start, transfer_metadata


def _dist_env() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) without a launcher."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _init_group(world: int) -> None:
    import torch.distributed as dist

    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")


def _broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank (pickled over gloo)."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def per_device_batch(global_batch: int, world: int) -> int:
    """Per-process batch for a global batch; refuses sizes that do not divide evenly (the
    runs would otherwise not take the same steps as one process)."""
    if global_batch % world:
        raise ValueError(
            f"models.deepseek.batch_size ({global_batch}) is the global batch and must be divisible by the "
            f"number of processes ({world})"
        )
    return global_batch // world


def train_distributed(config: Config, method: str | None = None, epochs: int | None = None,
                      register: bool = True, gate: bool = False) -> dict[str, Any] | None:
    """Run one training run in this process as one rank of the launched group.

    Returns the run summary on rank 0 and ``None`` on the other ranks. Raises
    :class:`~dmac_core.training.dataset.NotEnoughData` (on every rank) when there is too
    little data, and ``JobAlreadyRunning`` when another run holds the training lock.
    """

    rank, world = _dist_env()
    _init_group(world)
    configured = config  # the workbench's config, for the gate's services (serving the configured base)
    config = config.model_copy(deep=True)
    if epochs is not None:
        config.learner.epochs = epochs
    if method is not None:
        config.learner.method = method  # type: ignore[assignment]
    global_batch = config.learner.batch_size
    store = LearningStore(config.data_path, fsync=config.storage.fsync)
    registry = ModelRegistry(config.data_path / "models")
    jobs = TrainingJobManager(config, store, registry)

    plan: dict[str, Any]
    if rank == 0:
        try:
            jobs._acquire_process_lock()  # one run at a time, also against the workbench's runs
            data = build_dataset(store, config.learner)
            chosen = choose_method(data, config.learner) if config.learner.method == "auto" else config.learner.method
            check_enough(data, config.learner, chosen)
            start = resolve_start(config.learner.start_from, config, registry)
            apply_start(config, start)
            apply_replay(config, data, chosen)  # rank 0 asks the base model once; the data is broadcast
            run_id = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
            plan = {"ok": True, "run_id": run_id, "method": chosen, "data": data.to_dict(), "start": start.to_dict()}
        except Exception as exc:  # tell the other ranks, so nobody waits forever
            plan = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "not_enough": isinstance(exc, NotEnoughData)}
            jobs._release_process_lock()
    else:
        plan = {}
    plan = _broadcast(plan, world)
    if not plan["ok"]:
        _finish_group(world)
        if plan.get("not_enough"):
            raise NotEnoughData(plan["error"].split(": ", 1)[-1])
        raise RuntimeError(plan["error"])

    data = TrainingData.from_dict(plan["data"])
    chosen = plan["method"]
    apply_start(config, StartPoint(**plan["start"]))  # every rank starts from the same weights
    config.learner.batch_size = per_device_batch(global_batch, world)
    run_dir = config.data_path / "runs" / plan["run_id"]
    scratch: Path | None = None
    record: dict[str, Any] = {}
    if rank == 0:
        run_dir.mkdir(parents=True)
        atomic_write_json(run_dir / "data.json", data.to_dict())
        params = hyper_parameters(config)
        params.update(batch_size=global_batch, per_device_batch_size=config.learner.batch_size, world_size=world,
                      launcher="torchrun/accelerate" if world > 1 else "single process")
        record = {
            "run_id": plan["run_id"], "state": "running", "trigger": "distributed", "user": "",
            "method": chosen, "created": format_ts(utc_now()), "started": format_ts(utc_now()), "finished": None,
            "hyper_parameters": params, "lineage": data.lineage, "metrics": {}, "version": None,
            "promoted": False, "gate": None, "message": f"Training on {world} process(es)", "error": None,
            "champion_at_start": registry.served_id(), "start": plan["start"],
        }
        atomic_write_json(run_dir / "run.json", record)
        events = open(run_dir / "events.jsonl", "a", encoding="utf-8")
    else:
        # Other ranks save their (identical) adapter copy here instead of racing rank 0 on run_dir.
        scratch = Path(tempfile.mkdtemp(prefix=f"dmac-rank{rank}-"))
        events = None

    def progress(event: dict[str, Any]) -> None:
        if events is not None:
            events.write(json.dumps({**event, "ts": format_ts(utc_now())}, default=str) + "\n")
            events.flush()

    try:
        result = run_training(config, run_dir if rank == 0 else scratch, data, progress, lambda: False, chosen)
    except BaseException as exc:
        if rank == 0:
            record.update(state="failed", message=f"Training failed: {exc}", error=repr(exc),
                          finished=format_ts(utc_now()))
            atomic_write_json(run_dir / "run.json", record)
            jobs._release_process_lock()
        raise
    finally:
        if events is not None:
            events.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    summary: dict[str, Any] | None = None
    if rank == 0:
        try:
            record["metrics"] = result.metrics
            if register and result.adapter_dir is not None:
                metadata = {"base_model": str(config.base_model_path()), "method": chosen, "run_id": plan["run_id"],
                            "hyper_parameters": record["hyper_parameters"], "lineage": data.lineage,
                            "metrics": result.metrics, **transfer_metadata(plan["start"])}
                version = registry.register(result.adapter_dir, metadata)
                record["version"] = version.id
                if gate:

                    # the workbench's gate: evidence through the runtime that serves chat
                    verdict = LearningSystem(configured).gate.run(version.id, registry.served_id(), data)
                    record["gate"] = verdict
                    registry.update_metadata(version.id, gate=verdict)
                    if verdict["passed"]:
                        registry.promote(version.id, reason=f"run {plan['run_id']}: {verdict['reason']}")
                        record["promoted"] = True
                record["message"] = f"Version {version.id} registered" + (" and served" if record["promoted"] else "")
            record.update(state="completed", finished=format_ts(utc_now()))
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            atomic_write_json(run_dir / "run.json", record)
            summary = record
        finally:
            jobs._release_process_lock()
    _finish_group(world)
    return summary


def _finish_group(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()  # rank 0 may still be registering: nobody tears the group down under it
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Command line of ``python -m dmac_core.training.distributed`` (under a launcher or not)."""
    parser = argparse.ArgumentParser(prog="python -m dmac_core.training.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="config file (default: $DMAC_CONFIG or config/config.yaml)")
    parser.add_argument("--method", choices=["sft", "dpo", "kto", "auto"], default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--no-register", action="store_true", help="train only; do not register a version")
    parser.add_argument("--gate", action="store_true", help="promote the new version if it passes the gate")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = train_distributed(load_config(args.config), args.method, args.epochs, not args.no_register, args.gate)
    if summary is not None:
        print(json.dumps({k: summary.get(k) for k in ("run_id", "state", "method", "metrics", "version", "promoted",
                                                      "gate", "message")}, indent=2, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
