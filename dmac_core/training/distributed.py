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
4. rank 0 runs the workbench's own job (:class:`~dmac_core.training.job.TrainingJobManager`
   from :class:`~dmac_core.system.LearningSystem`), so the run takes every step "Train now"
   takes: the same lock, dataset, teacher rewrites and replayed answers (before the data is
   broadcast), the new version registered with its scope, the promotion gate through the
   runtime that serves chat, and the served version loaded; ``--no-gate`` registers without
   promoting, ``--no-register`` trains only. The other ranks write their (identical) adapter
   copy to a scratch directory and exit.

The run directory is ``<data_dir>/runs/<run_id>/`` with ``run.json``, ``events.jsonl`` and
``data.json``, as for every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any

from ..config import Config, load_config
from ..system import LearningSystem
from .dataset import NotEnoughData, TrainingData
from .trainer import run_training


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
                      register: bool = True, gate: bool = True) -> dict[str, Any] | None:
    """Run one training run in this process as one rank of the launched group.

    Returns the run's record (``run.json``) on rank 0 and ``None`` on the other ranks. Raises
    :class:`~dmac_core.training.dataset.NotEnoughData` (on every rank) when there is too little
    data, ``JobAlreadyRunning`` when another run holds the training lock, ``ValueError`` when the
    global batch does not divide among the processes.
    """
    rank, world = _dist_env()
    per_device = per_device_batch(config.learner.batch_size, world)  # every rank refuses alike
    _init_group(world)
    if rank != 0:
        return _follow(world, rank)
    jobs = LearningSystem(config).jobs  # the workbench's own wiring: gate, teacher, warm-up
    try:
        info, run_config, data, record = jobs.prepare_run("distributed", method=method, epochs=epochs)
    except Exception as exc:  # tell the other ranks, so nobody waits forever
        _broadcast({"ok": False, "error": f"{type(exc).__name__}: {exc}", "not_enough": isinstance(exc, NotEnoughData)},
                   world)
        _finish_group(world)
        raise
    record["hyper_parameters"].update(per_device_batch_size=per_device, world_size=world,
                                      launcher="torchrun/accelerate" if world > 1 else "single process")
    record["message"] = f"Training on {world} process(es)"
    run_config.learner.batch_size = per_device
    told: list[bool] = []

    def hand_out(final_config: Config, final_data: TrainingData, chosen: str) -> None:
        """The data after the teacher's rewrites and replay, to every rank, just before training."""
        _broadcast({"ok": True, "config": final_config, "data": final_data.to_dict(), "method": chosen}, world)
        told.append(True)

    jobs.execute(info, run_config, data, record, before_train=hand_out, register=register, gate=gate)
    if not told:  # it failed before training: release the other ranks
        _broadcast({"ok": False, "error": jobs.run_summary(info.run_id).get("message", "failed")}, world)
    _finish_group(world)
    return jobs.run_summary(info.run_id)


def _follow(world: int, rank: int) -> None:
    """A rank other than 0: train on what rank 0 hands out, into a scratch directory."""
    plan = _broadcast({}, world)
    if not plan["ok"]:
        _finish_group(world)
        if plan.get("not_enough"):
            raise NotEnoughData(plan["error"].split(": ", 1)[-1])
        raise RuntimeError(plan["error"])
    # its (identical) adapter copy goes here instead of racing rank 0 on the run directory
    scratch = tempfile.mkdtemp(prefix=f"dmac-rank{rank}-")
    try:
        run_training(plan["config"], scratch, TrainingData.from_dict(plan["data"]), lambda event: None,
                     lambda: False, plan["method"])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _finish_group(world)
    return None


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
    parser.add_argument("--gate", action="store_true", help="(the default) promote the new version if it passes the gate")
    parser.add_argument("--no-gate", action="store_true", help="register the new version without the gate (never served)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    summary = train_distributed(load_config(args.config), args.method, args.epochs, not args.no_register,
                                not args.no_gate)
    if summary is None:  # another rank: rank 0 reports
        return 0
    print(json.dumps({k: summary.get(k) for k in ("run_id", "state", "method", "metrics", "version", "promoted",
                                                  "gate", "message")}, indent=2, default=str), flush=True)
    return 0 if summary.get("state") in ("completed", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
