"""Typed configuration loaded from ``config/config.yaml``.

The file keeps the seed's keys (``models.deepseek.learning_enabled``, ``learning_rate``,
``batch_size``, ``epochs``, ``evaluation_interval``) and adds what the rest of the system
needs. Every key is validated: an unknown key, a wrong type or a missing file stops with a
:class:`ConfigError` that names the file, the key path and what was expected.

Environment overrides: ``DMAC_CONFIG`` (the config file) and ``DMAC_DATA_DIR`` (the data
directory). A relative ``data_dir`` in the file is resolved against the project root, so the
workbench behaves the same whatever directory it is started from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, model_validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config" / "config.yaml"
# The local learner's model name: its section in config (``models.deepseek``), its name in the
# logs and the router, and the prefix of a version's name (``deepseek@v0002``).
LEARNER = "deepseek"
BUNDLED_BASE_MODEL_NAME = "SmolLM2-135M-Instruct"


class ConfigError(ValueError):
    """The config file is missing or invalid; the message says where and what was expected."""


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: refuse them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Strict):
    """LoRA adapter settings. r=16/alpha=32 on all linear layers was measured as the setting
    that actually teaches the bundled 135M model new facts in a few dozen steps (bench/RESULTS.md,
    *How much the learner learns*)."""

    r: int = Field(16, ge=1, le=256)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


class ScheduleConfig(_Strict):
    """Periodic training of the local learner (see ``dmac_core.training.scheduler``).

    A scheduled run starts when every condition that is set holds: at least
    ``min_new_feedback`` feedback records arrived since the last run started, and at least
    ``every_hours`` passed since then. With only ``every_hours`` set, one new feedback record
    is still required (retraining on unchanged data would only burn CPU)."""

    enabled: bool = False
    min_new_feedback: int | None = Field(None, ge=1)
    every_hours: float | None = Field(None, gt=0)


class ReplayConfig(_Strict):
    """The base model's own answers to general prompts, trained along with the analysts' data
    (dmac_core/training/replay.py). Off by default: measured, it did not keep the general
    knowledge a dozen facts cost; serving each version only within its scope does."""

    enabled: bool = False
    prompts: list[str] = Field(default_factory=lambda: list(DEFAULT_REPLAY_PROMPTS), max_length=200)
    max_new_tokens: int = Field(64, ge=1, le=1024)


# General questions the bundled model answers right (through chat's decoding), across the
# kinds of question its general knowledge is asked in. Disjoint from the promotion gate's
# general-knowledge suite (config/general_knowledge.yaml), so the gate measures retention
# outside what is replayed.
DEFAULT_REPLAY_PROMPTS = (
    "What is the capital of Germany?", "What is the capital of Greece?", "What is the capital of Sweden?",
    "What is the capital of Norway?", "What is the capital of India?", "What is the capital of Kenya?",
    "Who wrote Hamlet?", "Who painted the Mona Lisa?", "Who wrote Pride and Prejudice?",
    "Who invented the telephone?", "What is the chemical symbol for iron?", "In which year did World War I begin?",
    "What is the longest river in Africa?", "How many seconds are in a minute?",
)


class GateConfig(_Strict):
    """The promotion gate: a finished run's version is served only when every check passes
    (dmac_core/training/gate.py). Evidence comes from the runtime that serves chat."""

    # YAML file of general-knowledge questions (prompt, accept, reference) the served version
    # must keep answering right; relative to the project root. null switches that check off.
    general_suite: str | None = "config/general_knowledge.yaml"
    # General questions the previous version answered right that a new one may get wrong.
    max_forgotten: int = Field(1, ge=0)
    # Rated answers (the newest) the new version is checked on, through the served runtime.
    max_rated_items: int = Field(40, ge=1, le=10_000)
    # New tokens for each general question (the accepted word comes early in a right answer).
    general_max_new_tokens: int = Field(32, ge=4, le=1024)


class ScopeConfig(_Strict):
    """Which questions a trained version answers (dmac_core/learner/scope.py): those whose
    nearest rated training question has embedding similarity ≥ ``threshold``; the others go to
    the base model it was trained on, so what the version did not learn it cannot forget."""

    enabled: bool = True
    threshold: float = Field(0.8, ge=0.0, le=1.0)


class LocalModelConfig(_Strict):
    """The local learner ("DeepSeek-RL"): a transformers causal LM trained with LoRA."""

    kind: Literal["local"] = "local"
    display_name: str = "DeepSeek-RL"
    enabled: bool = True
    # Path of a safetensors model directory; None means the bundled SmolLM2 converted under
    # ``<data_dir>/base/``. A relative path is resolved against the project root.
    base_model: str | None = None
    # Where a run starts (transfer learning): "base" = a fresh adapter on ``base_model``;
    # "served" = the served version; a version id ("v0003") = continue that version; a model
    # directory path = another base model. See dmac_core/training/transfer.py.
    start_from: str = Field("base", min_length=1)
    # --- the seed's keys ---
    learning_enabled: bool = True
    learning_rate: float = Field(0.002, gt=0, lt=1)
    batch_size: int = Field(8, ge=1, le=1024)
    epochs: int = Field(8, ge=1, le=1000)
    evaluation_interval: int = Field(100, ge=1)
    # --- training details ---
    method: Literal["sft", "dpo", "kto", "auto"] = "sft"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    min_rating_for_sft: int = Field(4, ge=1, le=5)
    max_rating_for_negative: int = Field(2, ge=1, le=5)
    # Share of analysts' rated prompts held out of training to measure generalisation on them.
    # 0 (default): every rated answer is trained; validation and the gate use the general suite.
    validation_fraction: float = Field(0.0, ge=0.0, lt=0.9)
    min_examples: int = Field(4, ge=1)
    max_length: int = Field(512, ge=16)
    seed: int = 0
    # The gate's over-fitting check: the new version's loss on the general suite's reference
    # answers (held out from training) may be at most this much (relative) above the served one's.
    promotion_tolerance: float = Field(0.15, ge=0.0, le=1.0)
    gate: GateConfig = Field(default_factory=GateConfig)
    # Optimizer steps between checkpoints (for resume); 0 = every evaluation_interval.
    checkpoint_interval: int = Field(0, ge=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    # "lora" trains an adapter (default); "full" fine-tunes every weight and registers a full
    # model directory as the version (≈ 4x the memory of the model for AdamW state).
    finetune: Literal["lora", "full"] = "lora"
    # Replay of the base model's own answers to general prompts in SFT runs (off by default: the
    # scope below keeps general questions on the base model, and replay alone did not).
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    # Serve each version only for questions near what it was taught.
    scope: ScopeConfig = Field(default_factory=ScopeConfig)
    # Pack the examples of a batch into one row without padding (TRL padding_free); the
    # attention mask stays block-diagonal per example. Measured faster in bench/train_bench.py.
    padding_free: bool = True
    # Periodic training (off by default).
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    # Model (a key of ``models``) that rewrites answers following analysts' textual feedback
    # before training; None disables it. Its calls go through the router (caps, logging).
    teacher: str | None = "gemini"
    # Experiment trackers that also receive each run's losses and metrics ([] = none; see
    # dmac_core/training/trackers.py): "tensorboard" (data/tensorboard/), "mlflow" (data/mlruns/).
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)
    # --- generation ---
    max_new_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    # Repetition penalty on the answer's own recent tokens (1.0 = off) and the loop guard that
    # stops an answer repeating itself verbatim (dmac_core/learner/decoding.py).
    repeat_penalty: float = Field(1.15, ge=1.0, le=2.0)
    penalty_window: int = Field(64, ge=1, le=4096)
    loop_guard: bool = True
    # What generation metrics (ROUGE, BLEU, key terms, latency) of the learner are measured on:
    # "served" = the runtime and weights that serve chat; "fp32" = the transformers model in fp32.
    evaluate_with: Literal["served", "fp32"] = "served"
    # --- serving (measured in bench/generation_bench.py, bench/generation_quality.py) ---
    # "auto": llama.cpp when llama-cpp-python is installed (make setup builds it) and the
    # model can be exported to GGUF, else the torch loop; "llama_cpp": llama.cpp or nothing
    # (the learner is off with the reason); "torch": the torch loop. precision "fp32" always
    # serves with torch, token for token what fp32 generate() says.
    runtime: Literal["auto", "llama_cpp", "torch"] = "auto"
    # Weight format of the served GGUF. f16 answers like the fp32 model (identical answers on most
    # everyday prompts); q8_0 and q4_1 decode ~1.4x faster but their 8-bit activations flip this
    # small model's near-ties ("What is the capital of France?" → "L'Étoile, la Cité, …"), so
    # answers rarely match fp32 (bench/decoding_quality.py, bench/RESULTS.md).
    gguf_weights: Literal["q8_0", "f16", "q4_1"] = "f16"
    # Threads for llama.cpp; 0 = the CPUs this process may run on.
    threads: int = Field(0, ge=0, le=256)


class GeminiModelConfig(_Strict):
    """Gemini over the google-genai SDK; on when ``api_key_env`` is set (env or secrets.toml)."""

    kind: Literal["gemini"]
    display_name: str = "Gemini 2.5 Pro"
    enabled: bool = True
    model: str = "gemini-2.5-pro"
    api_key_env: str = "GEMINI_API_KEY"
    base_url: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_output_tokens: int = Field(2048, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    # Tokens a thinking model may spend thinking, on top of the answer's own budget (Gemini bills
    # both as output; gemini-2.5-pro accepts 128..32768). null: send no thinking settings (the
    # model's default; the answer budget then has to hold the thinking too).
    thinking_budget: int | None = Field(1024, ge=0)


class OpenAICompatModelConfig(_Strict):
    """Any OpenAI-compatible chat API (DeepSeek by default; Ollama or vLLM by ``base_url``)."""

    kind: Literal["openai_compat"]
    display_name: str = "DeepSeek"
    enabled: bool = True
    model: str = "deepseek-chat"
    api_key_env: str | None = "DEEPSEEK_API_KEY"
    base_url: str = "https://api.deepseek.com/v1"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(2, ge=0, le=10)
    max_output_tokens: int = Field(2048, ge=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)


def _model_kind(value: object) -> str:
    # The seed's own snippet (models.deepseek with learning keys only) has no "kind": a model
    # without one is the local learner.
    if isinstance(value, dict):
        return str(value.get("kind", "local"))
    return str(getattr(value, "kind", "local"))


ModelConfig = Annotated[
    Union[
        Annotated[LocalModelConfig, Tag("local")],
        Annotated[GeminiModelConfig, Tag("gemini")],
        Annotated[OpenAICompatModelConfig, Tag("openai_compat")],
    ],
    Discriminator(_model_kind),
]


class CapsConfig(_Strict):
    """Usage caps per model; ``None`` means no cap."""

    requests_per_day: int | None = Field(None, ge=0)
    requests_per_minute: int | None = Field(None, ge=0)
    tokens_per_day: int | None = Field(None, ge=0)
    tokens_per_minute: int | None = Field(None, ge=0)


class RoutingConfig(_Strict):
    strategy: Literal["priority", "best_rated"] = "priority"
    # Model names in order of preference for "Auto"; empty means the order of ``models``.
    order: list[str] = Field(default_factory=list)
    caps: dict[str, CapsConfig] = Field(default_factory=dict)
    system_prompt: str = ""
    max_prompt_chars: int = Field(32_000, ge=1)
    cooldown_s: float = Field(60.0, ge=0)
    best_rated_min_samples: int = Field(5, ge=1)
    best_rated_window_days: int = Field(30, ge=1)
    exploration: float = Field(0.05, ge=0.0, le=1.0)
    # best_rated only: rank models by their ratings on the prompt's topic (dmac_core.insights),
    # so a topic moves to the local learner once it is rated there as well as the others.
    topic_aware: bool = False
    # best_rated only: what ranks models. "ratings": mean star rating; "votes": Bradley–Terry
    # strength from blind side-by-side votes (dmac_core/signals/leaderboard.py), the learner by
    # its served version; per topic when topic_aware. best_rated_min_samples then counts votes.
    rank_by: Literal["ratings", "votes"] = "ratings"


class LeaderboardConfig(_Strict):
    """The Metrics page's leaderboard from blind votes (dmac_core/signals/leaderboard.py)."""

    # Votes an entry needs before its strength is acted on; below it the board says "too few".
    min_votes: int = Field(20, ge=1)
    # "tie": a both-bad vote counts as a tie (neither is preferred); "exclude": it is left out
    # of the strengths (still counted in the both_bad column).
    both_bad: Literal["tie", "exclude"] = "tie"
    # Resamplings of the votes behind each 95 % interval.
    bootstrap_samples: int = Field(400, ge=50, le=10_000)


DEFAULT_RUBRIC = (
    "Rate the answer to the question from 1 to 5. 5: correct, complete and clear. 4: correct with "
    "minor omissions. 3: partly correct or unclear. 2: mostly wrong or unhelpful. 1: wrong, "
    "harmful or off-topic."
)


class JudgeConfig(_Strict):
    """An LLM judge that scores unrated answers by a rubric (dmac_core/signals/judge.py).

    Its labels become training material only while its agreement with analysts on the answers
    they rated (quadratic-weighted Cohen's kappa, per judge and rubric) is at least
    ``agreement_bar`` on at least ``min_items`` answers."""

    model: str | None = None  # a key of models; None: no judge
    rubric: str = Field(DEFAULT_RUBRIC, min_length=1)
    agreement_bar: float = Field(0.6, ge=-1.0, le=1.0)
    min_items: int = Field(30, ge=2)
    # Answers one "Judge now" (or CLI run) sends to the judge at most: each is a routed call.
    max_items: int = Field(20, ge=1, le=10_000)


class StorageConfig(_Strict):
    # fsync every append before it returns (durable against power loss, ~1 ms on SSD).
    fsync: bool = True


class UIConfig(_Strict):
    progress_refresh_s: float = Field(1.0, gt=0)


class SecurityConfig(_Strict):
    """Sign-in hardening: sessions that end by themselves, throttling and lockouts."""

    session_idle_minutes: float = Field(60, gt=0)
    session_max_hours: float = Field(12, gt=0)
    max_failures_per_name: int = Field(5, ge=1)
    max_failures_per_client: int = Field(20, ge=1)
    failure_window_minutes: float = Field(15, gt=0)
    lockout_minutes: float = Field(15, gt=0)
    max_parallel_sign_ins: int = Field(2, ge=1)


class GatewayConfig(_Strict):
    """The OpenAI-compatible API served next to the pages (same process, same loaded learner)."""

    enabled: bool = True
    address: str = "127.0.0.1"  # other addresses need sign-in configured (users, hence API keys)
    port: int = Field(8502, ge=1, le=65535)
    max_body_bytes: int = Field(1_000_000, ge=1_000)  # a larger request body is refused with 413
    requests_per_minute_per_key: int | None = Field(60, ge=1)  # per API key; a key may set its own
    max_stream_wait_s: float = Field(600, gt=0)  # longest wait for the next piece of a streamed answer
    max_parallel_answers: int = Field(64, ge=1)  # whole (non-streamed) answers waited on at once; more queue


class Config(_Strict):
    data_dir: str = "data"
    models: dict[str, ModelConfig] = Field(default_factory=lambda: {LEARNER: LocalModelConfig()})
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    leaderboard: LeaderboardConfig = Field(default_factory=LeaderboardConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    # Set by load_config, not by the file: where this config came from (for messages).
    source: str = Field("<defaults>", exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> "Config":
        if LEARNER not in self.models or not isinstance(self.models[LEARNER], LocalModelConfig):
            raise ValueError("models.deepseek must exist and have kind 'local' (it is the local learner, DeepSeek-RL)")
        for name in self.routing.order:
            if name not in self.models:
                raise ValueError(f"routing.order names {name!r}, which is not a key of models")
        for name in self.routing.caps:
            if name not in self.models:
                raise ValueError(f"routing.caps names {name!r}, which is not a key of models")
        if self.judge.model is not None and self.judge.model not in self.models:
            raise ValueError(f"judge.model names {self.judge.model!r}, which is not a key of models")
        return self

    # -- derived paths ---------------------------------------------------------------
    @property
    def data_path(self) -> Path:
        path = Path(self.data_dir).expanduser()
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def learner(self) -> LocalModelConfig:
        """The local learner's config (``models.deepseek``)."""
        model = self.models[LEARNER]
        assert isinstance(model, LocalModelConfig)
        return model

    def routing_order(self) -> list[str]:
        """Model names in order of preference for automatic routing."""
        return list(self.routing.order) or list(self.models)

    def resolve_path(self, path: str | None) -> Path:
        """A configured model path; relative to the project root; None = the bundled base."""
        if not path:
            return self.data_path / "base" / BUNDLED_BASE_MODEL_NAME
        resolved = Path(path).expanduser()
        return resolved if resolved.is_absolute() else PROJECT_ROOT / resolved

    def general_suite_path(self) -> Path | None:
        """The gate's general-knowledge suite file, or None when that check is switched off."""
        suite = self.learner.gate.general_suite
        if not suite:
            return None
        resolved = Path(suite).expanduser()
        return resolved if resolved.is_absolute() else PROJECT_ROOT / resolved

    def base_model_path(self) -> Path:
        """Directory of the learner's base model (safetensors)."""
        return self.resolve_path(self.learner.base_model)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"Invalid config in {source}:"]
    for item in err.errors():
        path = ".".join(str(p) for p in item["loc"] if not str(p).startswith(("function-", "tagged-union")))
        kind = item["type"]
        if kind == "extra_forbidden":
            what = "unknown key (check the spelling; see config/config.yaml for the known keys)"
        elif kind == "missing":
            what = "required key is missing"
        else:
            what = f"{item['msg']} (got {item.get('input')!r})"
        lines.append(f"  - {path or '<top level>'}: {what}")
    return "\n".join(lines)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config.

    ``path`` defaults to ``$DMAC_CONFIG`` or ``config/config.yaml``; ``$DMAC_DATA_DIR``
    overrides ``data_dir``. Raises :class:`ConfigError` with the file, key path and expectation.
    """
    config_path = Path(path or os.environ.get("DMAC_CONFIG") or DEFAULT_CONFIG_PATH).expanduser()
    if not config_path.is_file():
        raise ConfigError(
            f"Config file not found: {config_path}. Copy config/config.yaml from the repository "
            "or set DMAC_CONFIG to an existing file."
        )
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {config_path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"Config file {config_path}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    if os.environ.get("DMAC_DATA_DIR"):
        raw["data_dir"] = os.environ["DMAC_DATA_DIR"]
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, str(config_path))) from None
    config.source = str(config_path)
    return config
