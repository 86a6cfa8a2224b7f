"""A model that answers at once, for benchmarks of what the workbench itself adds (routing,
capture, HTTP): with it, every millisecond measured is the workbench's."""

from __future__ import annotations

from typing import Any, Iterator

from dmac_core.backends.base import Availability, Generation


class InstantBackend:
    """Implements the backend protocol (``available``, ``generate``, ``stream``) with no model."""

    def __init__(self, name: str, text: str = "ok") -> None:
        self.name = name
        self.text = text

    def available(self) -> Availability:
        return Availability(True)

    def generate(self, messages: list[dict[str, Any]], **options: Any) -> Generation:
        return Generation(text=self.text, provider_model=self.name, tokens_in=1, tokens_out=1, latency_ms=0.0)

    def stream(self, messages: list[dict[str, Any]], **options: Any) -> Iterator[Any]:
        yield self.text
        yield self.generate(messages)
