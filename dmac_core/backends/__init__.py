"""Model backends behind one protocol (see :mod:`dmac_core.backends.base`)."""

from __future__ import annotations

from ..config import LEARNER, Config, GeminiModelConfig, LocalModelConfig, OpenAICompatModelConfig
from ..learner.registry import ModelRegistry
from ..secrets import SecretsError, resolve_api_key
from .base import Availability, Backend, BackendError, Generation


class DisabledBackend:
    """Stands in for a model switched off in config, so the UI can say why."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self._reason = reason

    def available(self) -> Availability:
        return Availability(False, self._reason)

    def generate(self, messages, **options):  # type: ignore[no-untyped-def]
        raise BackendError(f"{self.name}: {self._reason}", kind="unavailable")

    def stream(self, messages, **options):  # type: ignore[no-untyped-def]
        raise BackendError(f"{self.name}: {self._reason}", kind="unavailable")


def build_backends(config: Config, registry: ModelRegistry) -> dict[str, Backend]:
    """One backend per configured model, in config order. API keys come from the
    environment or ``.streamlit/secrets.toml``; a model without its key reports itself
    unavailable (with the reason) instead of failing."""

    backends: dict[str, Backend] = {}
    for name, model in config.models.items():
        if not model.enabled:
            backends[name] = DisabledBackend(name, f"disabled in config (models.{name}.enabled: false)")
        elif isinstance(model, LocalModelConfig):
            # each backend is imported when configured, for start-up time: torch, google-genai and
            # openai are imported only by the models that use them
            from .local import LocalBackend

            if name == LEARNER:  # the learner: serves the registry's promoted version
                backends[name] = LocalBackend(name, model, config.base_model_path(), registry,
                                              bundled_base=model.base_model is None)
            else:  # another local model: served as configured, never trained here
                other = ModelRegistry(config.data_path / f"models-{name}")
                backends[name] = LocalBackend(name, model, config.resolve_path(model.base_model), other)
        else:
            try:
                key = resolve_api_key(model.api_key_env)
            except SecretsError as exc:  # a broken secrets.toml switches the model off, visibly
                backends[name] = DisabledBackend(name, str(exc))
                continue
            if isinstance(model, GeminiModelConfig):
                from .gemini import GeminiBackend  # lazily, see above

                backends[name] = GeminiBackend(name, model, key, data_dir=config.data_path)
            elif isinstance(model, OpenAICompatModelConfig):
                from .openai_compat import OpenAICompatBackend  # lazily, see above

                backends[name] = OpenAICompatBackend(name, model, key)
    return backends


__all__ = ["Availability", "Backend", "BackendError", "Generation", "build_backends", "DisabledBackend"]
