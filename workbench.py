"""Start the workbench: the Streamlit pages and the OpenAI-compatible API in one process.

``python -m dmac_core serve`` (and so ``make run``) runs this file. One process, so browser
sessions and API clients share the one loaded learner and its first-come-first-served queue,
and a version promoted by "Train now" answers both from the next request on. ``streamlit run
app.py`` still works and serves the pages alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The DMac Learning Workbench: pages and API in one process.")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--api-address", default=None, help="the API's address (default: gateway.address)")
    parser.add_argument("--api-port", type=int, default=None, help="the API's port (default: gateway.port; 0: off)")
    args = parser.parse_args(argv)

    from streamlit import config as streamlit_config
    from streamlit.web import bootstrap

    from dmac_core import get_learning_system
    from dmac_core.gateway.server import GatewayError, start_gateway

    app = str(ROOT / "app.py")
    streamlit_config._main_script_path = app  # where Streamlit looks for .streamlit/ (config, secrets)
    flags = {"server_address": args.address, "server_port": args.port, "server_headless": True,
             "browser_gatherUsageStats": False}
    bootstrap.load_config_options(flags)

    system = get_learning_system()  # the same instance the pages get (pages/common.py)
    settings = system.config.gateway
    port = settings.port if args.api_port is None else args.api_port
    if settings.enabled and port:
        address = args.api_address or settings.address
        try:
            gateway = start_gateway(system, address, port)
        except GatewayError as exc:
            print(f"{exc}", file=sys.stderr)
            return 2
        print(f"OpenAI-compatible API on {gateway.url}  (POST /chat/completions, GET /models, POST /feedback)",
              flush=True)
    else:
        print("OpenAI-compatible API: off (gateway.enabled / --api-port 0)", flush=True)
    bootstrap.run(app, False, [], flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
