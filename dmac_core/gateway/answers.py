"""One answer of the router, produced in a worker thread and read by the gateway's event loop.

The router's stream is a blocking iterator (the local learner decodes in this process; API
models are called with blocking SDKs), so each answer runs in its own thread and hands its
pieces to the event loop through an ``asyncio.Queue``. When the client goes away the reader
says so (:meth:`AnswerWorker.abandon`); the worker closes the router's stream at the next
piece, which stops the model and writes the interaction record with what was said so far,
marked cut off. A worker therefore never leaves an answer unrecorded, whatever the client does.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..serving.router import ChatResult


@dataclass(frozen=True)
class Event:
    """A step of an answer: ``route`` (model, reason), ``delta`` (text), ``done`` (a
    :class:`ChatResult`) or ``error`` (the exception that ended it)."""

    kind: str
    value: Any = None
    reason: str = ""


class AnswerWorker:
    """Runs ``start()`` (which returns the router's stream) in a thread; read with :meth:`next`."""

    def __init__(self, start: Callable[[Callable[[str, str], None]], Iterator[Any]],
                 loop: asyncio.AbstractEventLoop) -> None:
        self._start = start
        self._loop = loop
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._gone = threading.Event()
        self.finished = False
        self.thread = threading.Thread(target=self._run, name="gateway-answer", daemon=True)

    def begin(self) -> "AnswerWorker":
        self.thread.start()
        return self

    def _put(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the server's loop is closed (shutting down): nobody is reading
            self._gone.set()

    def _run(self) -> None:
        stream: Iterator[Any] | None = None
        try:
            stream = self._start(lambda model, reason: self._put(Event("route", model, reason)))
            for item in stream:
                if self._gone.is_set():
                    break
                self._put(Event("done", item) if isinstance(item, ChatResult) else Event("delta", item))
            else:
                return
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # the router records the answer so far as cut off
        except BaseException as exc:  # noqa: BLE001 - every failure reaches the client as an error event
            self._put(Event("error", exc))

    async def next(self, timeout: float) -> Event:
        """The next event; ``error`` with :class:`TimeoutError` after ``timeout`` seconds of silence."""
        try:
            event = await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            self.abandon()
            return Event("error", TimeoutError(f"no answer within {timeout:.0f} s"))
        if event.kind in ("done", "error"):
            self.finished = True
        return event

    def abandon(self) -> None:
        """The reader is gone: stop the answer at its next piece (it is recorded as cut off)."""
        if not self.finished:
            self._gone.set()
