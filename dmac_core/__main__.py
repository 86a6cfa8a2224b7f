"""Command line: ``python -m dmac_core <command>``; ``--help`` on any command explains it."""

from __future__ import annotations

import argparse
import subprocess
import sys
from typing import Any, Callable

from .security.directory import sign_in_configured
from .security.network import is_loopback
from .cli.common import config_parser, dispatch
from .config import PROJECT_ROOT, Config


def _cmd_setup(args: argparse.Namespace, config: Config) -> int:
    # Each command imports what it needs when it runs, for start-up time: `--help` and the
    # light commands answer without loading torch.
    from .learner.base_model import ensure_base_model

    if config.learner.base_model:
        print(f"Using the configured base model {config.base_model_path()} (no conversion needed).")
    else:
        path = ensure_base_model(config.base_model_path(), progress=lambda msg: print(msg, flush=True))
        print(f"Base model ready: {path}")
    _prepare_serving(config)
    return 0


def _prepare_serving(config: Config) -> None:
    """Make the served version's GGUF copy now, so the first chat answer does not wait for it,
    and its answers to the gate's general-knowledge suite, so the first "Train now" does not."""
    from .system import LearningSystem  # lazily, for start-up time (see _cmd_setup)

    system = LearningSystem(config)  # the workbench's own services, as `serve` builds them
    backend = system.local_backend
    if not hasattr(backend, "prepare"):  # switched off in config
        print(f"Local model: {backend.available().reason}")
        return
    try:
        runtime = backend.prepare()
    except Exception as exc:  # setup still succeeds; the Chat page reports the learner's state
        print(f"Could not prepare the local model for serving: {exc}", file=sys.stderr)
        return
    print(f"Local model runs on: {runtime}")
    if backend.llama_cpp_pending():
        # measured now it would describe the torch loop, not llama.cpp, which serves in minutes
        print("The gate's general-knowledge answers are measured with the first \"Train now\" "
              "(llama.cpp is still being built).")
        return
    served = system.registry.served_id()
    try:
        if system.gate.prepare(served):
            print(f"Gate evidence ready: {served}'s answers to the general-knowledge suite")
    except Exception as exc:  # the first run's gate measures it then
        print(f"Could not measure {served} on the general-knowledge suite yet: {exc}", file=sys.stderr)


def _cmd_serve(args: argparse.Namespace, config: Config) -> int:
    settings = config.gateway
    api_port = settings.port if args.api_port is None else args.api_port
    api_address = args.api_address or settings.address
    exposed = [address for address, on in ((args.address, True), (api_address, settings.enabled and api_port))
               if on and not is_loopback(address)]
    if exposed and not sign_in_configured():
        print(
            f"Refusing to listen on {exposed[0]}: the workbench would be reachable by others without sign-in.\n"
            "Add a user first: python -m dmac_core add-user NAME   (then run again), configure OIDC\n"
            "([auth] in .streamlit/secrets.toml, see the README), or use --address 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    # One process for the pages and the API (workbench.py), so both share one loaded learner.
    command = [sys.executable, str(PROJECT_ROOT / "workbench.py"), "--address", args.address,
               "--port", str(args.port), "--api-address", api_address, "--api-port", str(api_port)]
    print(f"DMac Learning Workbench on http://{args.address}:{args.port}  (Ctrl+C to stop)", flush=True)
    try:
        return subprocess.call(command, cwd=PROJECT_ROOT)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = config_parser(
        "python -m dmac_core",
        description="DMac Learning Workbench: chat with LLMs, rate answers, train the local learner on them.",
        epilog="Config: config/config.yaml (or $DMAC_CONFIG); data: data/ (or $DMAC_DATA_DIR).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("setup", help="convert the bundled model once (idempotent)")
    p.set_defaults(handler=_cmd_setup)

    p = sub.add_parser("serve", help="start the workbench: the pages in the browser and the OpenAI-compatible API")
    p.add_argument("--address", default="127.0.0.1", help="listen address (default 127.0.0.1; others need sign-in)")
    p.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    p.add_argument("--api-address", default=None,
                   help="the API's listen address (default: gateway.address in config, 127.0.0.1)")
    p.add_argument("--api-port", type=int, default=None,
                   help="the API's port (default: gateway.port in config, 8502; 0 switches the API off)")
    p.set_defaults(handler=_cmd_serve)

    for register in _registrars():
        register(sub)
    return parser


def _registrars() -> list[Callable[[Any], None]]:
    # lazily, for start-up time: `serve` and `setup` need none of the command groups' modules
    from .cli.api_keys import register as register_api_keys
    from .cli.evaluation import register as register_evaluation
    from .cli.logs import register as register_store
    from .cli.signals import register as register_signals
    from .cli.training import register as register_training
    from .cli.users import register as register_users
    from .cli.versions import register as register_versions
    from .training.export import register as register_export

    return [register_users, register_api_keys, register_training, register_versions, register_evaluation,
            register_store, register_export, register_signals]


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
