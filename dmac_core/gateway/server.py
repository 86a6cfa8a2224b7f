"""Serve the gateway with uvicorn in a background thread of the workbench's process.

In the same process as the Streamlit pages, so browser sessions and API clients share one
loaded learner (and its first-come-first-served queue), and a version promoted by "Train now"
answers both from the next request on.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from ..system import LearningSystem
from .app import create_app


class GatewayError(RuntimeError):
    """The gateway could not start (the port is taken, the address is not this machine's...)."""


class GatewayServer:
    """The OpenAI-compatible API on ``address:port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(self, system: LearningSystem, address: str, port: int) -> None:
        self.address = address
        self.requested_port = port
        config = uvicorn.Config(create_app(system), host=address, port=port, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._failure: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="dmac-gateway", daemon=True)

    def _serve(self) -> None:
        try:
            self.server.run()  # not the main thread: uvicorn installs no signal handlers
        except BaseException as exc:  # noqa: BLE001 - uvicorn exits with SystemExit when it cannot bind
            self._failure = exc

    def start(self, timeout: float = 15.0) -> "GatewayServer":
        """Start serving; return once requests are accepted, or raise :class:`GatewayError`."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise GatewayError(f"The API could not listen on {self.address}:{self.requested_port} (is the port "
                                   "in use? choose another: `make run API_PORT=N`, `serve --api-port N` or "
                                   "gateway.port; 0 switches the API off)")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        """The port actually listened on."""
        servers: Any = getattr(self.server, "servers", [])
        for server in servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.requested_port

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_gateway(system: LearningSystem, address: str, port: int) -> GatewayServer:
    """Start the API for ``system`` on ``address:port``; raise :class:`GatewayError` if it cannot."""
    return GatewayServer(system, address, port).start()
