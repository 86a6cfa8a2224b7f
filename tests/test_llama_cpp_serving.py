"""Serving the local learner through llama.cpp: the GGUF export is exact, the
served answers are the HF model's, versions switch, the GGUF copy is cached and refreshed,
and a model llama.cpp cannot run falls back to the torch loop (or is refused, when asked for).

``make test`` builds llama-cpp-python and sets DMAC_REQUIRE_LLAMA_CPP, so these tests fail
instead of skipping when the build is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from dmac_core.backends.base import BackendError
from dmac_core.backends.local import LocalBackend
from dmac_core.config import Config
from dmac_core.learner.base_model import bundled_gguf_path
from dmac_core.learner.gguf_export import GGUFExportError, read_metadata, write_gguf
from dmac_core.learner.llama_cpp_runtime import LlamaCppGenerator, llama_cpp_importable, prune_cache
from dmac_core.learner.registry import ModelRegistry
from tests.test_export import _register_adapter

pytestmark = pytest.mark.skipif(
    not llama_cpp_importable() and os.environ.get("DMAC_REQUIRE_LLAMA_CPP") != "on",
    reason="llama-cpp-python is not installed (make setup builds it)",
)

PROMPTS = ["What is the capital of France?", "Name a colour.", "Tell me a story about a cat."]


def _ids(tok: Any, prompt: str) -> list[int]:
    return tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                   return_dict=True)["input_ids"]


def _hf_greedy(model: Any, tok: Any, ids: list[int], n: int) -> list[int]:
    return _hf_greedy_margins(model, tok, ids, n)[0]


def _hf_greedy_margins(model: Any, tok: Any, ids: list[int], n: int) -> tuple[list[int], list[float]]:
    """HF's greedy tokens and, per step, the gap between its best and second-best logit."""
    t = torch.tensor([ids])
    with torch.inference_mode():
        out = model.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=n, do_sample=False,
                             temperature=None, top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                             output_scores=True, return_dict_in_generate=True)
    margins = [float(top[0, 0] - top[0, 1]) for top in (s.topk(2).values for s in out.scores)]
    return out.sequences[0, len(ids):].tolist(), margins


def _decisive_prefix(margins: list[float], tolerance: float = 0.05) -> int:
    """Steps before the first near-tie: fp16 activations may pick either side of a tie."""
    return next((i for i, m in enumerate(margins) if m < tolerance), len(margins))


@pytest.fixture(scope="module")
def tiny_hf(tiny_model_dir: Path) -> tuple[Any, Any]:
    """The tiny model with larger random weights: its greedy answers vary token by token
    (the session's tiny model repeats one token), so a wrong position or cache shows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(5)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:  # fp16-representable, so the f16 export itself loses nothing
                param.copy_(torch.randn_like(param).mul_(0.5).half().float())
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_f16_export_gives_llama_cpp_the_hf_logits(tiny_hf: tuple[Any, Any], tmp_path: Path) -> None:
    import llama_cpp

    model, tok = tiny_hf
    path = write_gguf(model, tmp_path / "tiny.gguf", bundled_gguf_path(), "f16")
    ids = _ids(tok, PROMPTS[0])
    with torch.inference_mode():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        got = np.asarray(llm.scores[: len(ids)])
    finally:
        llm.close()
    # every position: a wrong q/k permutation or tensor mapping breaks positions > 0 first
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-2 * max(1.0, float(np.abs(expected).max()))
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.05  # no near-tie at this position
    assert clear.sum() >= len(ids) // 2
    assert (got.argmax(axis=1) == expected.argmax(axis=1))[clear].all()


def test_generator_tokens_are_hf_greedy_tokens(tiny_hf: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = tiny_hf
    generator = LlamaCppGenerator(write_gguf(model, tmp_path / "tiny.gguf", bundled_gguf_path(), "f16"), n_ctx=512)
    try:
        compared = 0
        for prompt in PROMPTS:
            ids = _ids(tok, prompt)
            expected, margins = _hf_greedy_margins(model, tok, ids, 10)
            n = _decisive_prefix(margins)
            assert list(generator.stream_tokens(ids, 10, 0.0, []))[:n] == expected[:n]
            compared += n
        assert compared >= 10  # the comparison was not vacuous
        # a stop (EOS) token ends the answer before it; the length limit is honoured
        ids = _ids(tok, PROMPTS[2])
        greedy = _hf_greedy(model, tok, ids, 10)
        cut = next(j for j in range(1, len(greedy)) if greedy[j] not in greedy[:j])
        assert list(generator.stream_tokens(ids, 10, 0.0, [greedy[cut]])) == greedy[:cut]
        assert len(list(generator.stream_tokens(_ids(tok, PROMPTS[1]), 4, 0.8, [], seed=1))) == 4
        with pytest.raises(ValueError, match="exceeds the context"):
            list(generator.stream_tokens(list(range(1, 500)), 100, 0.0, []))
    finally:
        generator.close()


def test_a_growing_chat_reuses_the_cache_and_answers_as_from_scratch(tiny_hf: tuple[Any, Any], tmp_path: Path) -> None:
    model, tok = tiny_hf
    path = write_gguf(model, tmp_path / "tiny.gguf", bundled_gguf_path(), "f16")
    warm, fresh = LlamaCppGenerator(path, n_ctx=512), LlamaCppGenerator(path, n_ctx=512)
    try:
        first = _ids(tok, PROMPTS[0])
        answer = list(warm.stream_tokens(first, 6, 0.0, []))
        assert list(warm.stream_tokens(first, 6, 0.0, [])) == answer  # the same question again
        chat = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]},
                                        {"role": "assistant", "content": tok.decode(answer)},
                                        {"role": "user", "content": PROMPTS[1]}],
                                       add_generation_prompt=True, return_dict=True)["input_ids"]
        reused = warm._reuse_prefix(chat)
        assert reused >= len(first) - 1  # only the new turn is prefilled
        assert list(warm.stream_tokens(chat, 6, 0.0, [])) == list(fresh.stream_tokens(chat, 6, 0.0, []))
        # a different conversation drops the cache where they part, and still answers correctly
        other = _ids(tok, PROMPTS[2])
        assert list(warm.stream_tokens(other, 6, 0.0, [])) == list(fresh.stream_tokens(other, 6, 0.0, []))
        # sampling: the same seed draws the same answer
        drawn = list(warm.stream_tokens(other, 8, 1.0, [], seed=3))
        assert drawn == list(fresh.stream_tokens(other, 8, 1.0, [], seed=3))
    finally:
        warm.close()
        fresh.close()
    with pytest.raises(RuntimeError, match="closed"):
        list(warm.stream_tokens(other, 2, 0.0, []))


def _config(make_config: Callable[..., Config], **learner: Any) -> Config:
    # plain greedy decoding (no repetition penalty, no loop guard), so answers can be compared
    # token for token with transformers' greedy generate()
    settings = {"precision": "auto", "runtime": "llama_cpp", "gguf_weights": "f16", "repeat_penalty": 1.0,
                "loop_guard": False, **learner}
    return make_config(**settings)


def _answer(backend: LocalBackend, prompt: str) -> Any:
    return backend.generate([{"role": "user", "content": prompt}], max_new_tokens=8)


def test_backend_serves_each_version_through_llama_cpp(make_config: Callable[..., Config], tmp_path: Path) -> None:
    config = _config(make_config)
    registry = ModelRegistry(config.data_path / "models")
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)
    answer = _answer(backend, PROMPTS[0])
    loaded = backend.current()
    assert loaded.runtime == "llama.cpp (f16 GGUF)" and isinstance(loaded.fast, LlamaCppGenerator)
    assert answer.model_version == "base" and (registry.models_dir / "gguf" / "base.f16.gguf").is_file()
    assert loaded._model is None  # serving alone never loads the HF model
    expected = _hf_greedy(loaded.model, loaded.tokenizer, _ids(loaded.tokenizer, PROMPTS[0]), 8)
    assert answer.text == loaded.tokenizer.decode(expected, skip_special_tokens=True).strip()
    assert answer.tokens_out == len(expected)

    registry, version = _register_adapter(config, tmp_path)  # non-zero LoRA weights: answers change
    registry.promote(version, reason="test")
    answer = _answer(backend, PROMPTS[0])
    loaded = backend.current()
    assert answer.model_version == version and (registry.models_dir / "gguf" / f"{version}.f16.gguf").is_file()
    merged = _hf_greedy(loaded.model, loaded.tokenizer, _ids(loaded.tokenizer, PROMPTS[0]), 8)
    assert merged != expected  # the adapter is really merged into what llama.cpp runs
    assert answer.text == loaded.tokenizer.decode(merged, skip_special_tokens=True).strip()


def test_a_broken_served_version_is_off_and_never_answered_by_the_base(
    make_config: Callable[..., Config], tmp_path: Path
) -> None:
    config = _config(make_config)
    registry, version = _register_adapter(config, tmp_path)
    registry.promote(version, reason="test")
    (registry.models_dir / version / "version.json").unlink()  # e.g. a half-deleted version
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(), registry)
    availability = backend.available()
    assert not availability.ok
    assert availability.reason.startswith(f"the served version {version} cannot be loaded (No model version")
    with pytest.raises(BackendError, match=f"{version} of deepseek cannot be loaded"):
        backend.current()
    with pytest.raises(BackendError, match="cannot be loaded"):
        _answer(backend, "hi")


def test_gguf_copy_is_reused_and_redone_when_the_weights_change(tiny_model_dir: Path, tmp_path: Path) -> None:
    from dmac_core.config import load_config
    from tests.conftest import tiny_config_dict, write_config

    base = tmp_path / "own-base"
    shutil.copytree(tiny_model_dir, base)
    data = tiny_config_dict(tmp_path / "data", base, precision="auto", runtime="llama_cpp", gguf_weights="f16")
    config = load_config(write_config(tmp_path / "config.yaml", data))
    registry = ModelRegistry(config.data_path / "models")
    gguf = registry.models_dir / "gguf" / "base.f16.gguf"
    _answer(LocalBackend("deepseek", config.learner, base, registry), "hi")
    made = gguf.stat().st_mtime_ns
    _answer(LocalBackend("deepseek", config.learner, base, registry), "hi")  # a restart: the copy is reused
    assert gguf.stat().st_mtime_ns == made
    weights = base / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # a re-converted base
    _answer(LocalBackend("deepseek", config.learner, base, registry), "hi")
    assert gguf.stat().st_mtime_ns != made


def test_only_the_newest_gguf_copies_are_kept_and_the_served_ones(tmp_path: Path) -> None:
    for age, name in enumerate(["v0004.q8_0.gguf", "v0003.q8_0.gguf", "v0002.q8_0.gguf", "base.q8_0.gguf"]):
        path = tmp_path / name
        path.write_bytes(b"GGUF")
        (tmp_path / f"{name}.json").write_text("{}", encoding="utf-8")
        os.utime(path, ns=(10**18 - age * 10**9, 10**18 - age * 10**9))  # v0004 newest
    # v0002 is served; the gate checked (and refused) v0003 and v0004 since: its copy stays
    removed = prune_cache(tmp_path, keep=2, protect=[tmp_path / "v0002.q8_0.gguf"])
    assert [p.name for p in removed] == ["base.q8_0.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "v0002.q8_0.gguf", "v0002.q8_0.gguf.json", "v0003.q8_0.gguf", "v0003.q8_0.gguf.json",
        "v0004.q8_0.gguf", "v0004.q8_0.gguf.json"]


def test_a_model_llama_cpp_cannot_run_falls_back_or_is_refused(make_config: Callable[..., Config]) -> None:
    # The tiny model's rows (16 values) do not split into q8_0's 32-value blocks.
    auto = make_config(precision="auto", runtime="auto", gguf_weights="q8_0")
    backend = LocalBackend("deepseek", auto.learner, auto.base_model_path(), ModelRegistry(auto.data_path / "models"))
    assert _answer(backend, "hi").text is not None
    assert backend.current().runtime.startswith("torch")
    assert "multiple of 32" in backend.runtime_status()

    strict = make_config(precision="auto", runtime="llama_cpp", gguf_weights="q8_0")
    backend = LocalBackend("deepseek", strict.learner, strict.base_model_path(),
                           ModelRegistry(strict.data_path / "models"))
    with pytest.raises(BackendError, match="multiple of 32") as caught:
        _answer(backend, "hi")
    assert caught.value.kind == "unavailable"


def test_llama_runtime_without_the_package_says_how_to_fix_it(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    import dmac_core.backends.local as local

    monkeypatch.setattr(local, "llama_cpp_importable", lambda: False)
    strict = _config(make_config)
    backend = LocalBackend("deepseek", strict.learner, strict.base_model_path(),
                           ModelRegistry(strict.data_path / "models"))
    availability = backend.available()
    assert not availability.ok and "make setup" in availability.reason
    auto = make_config(precision="auto", runtime="auto")
    backend = LocalBackend("deepseek", auto.learner, auto.base_model_path(), ModelRegistry(auto.data_path / "models"))
    assert "not installed" in backend.runtime_status()
    _answer(backend, "hi")
    assert backend.current().runtime.startswith("torch")


def test_torch_serves_while_llama_cpp_builds_then_llama_cpp_from_the_next_answer(
    make_config: Callable[..., Config], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``make run`` on a new machine opens the workbench while llama-cpp-python compiles in the
    background: the torch loop answers, the status says the build's progress, and the first
    answer after the build is done comes from llama.cpp without a restart."""
    import json

    import dmac_core.backends.local as local
    from dmac_core.learner.llama_cpp_build import read_build_status

    status_file = tmp_path / "llama-cpp-build.json"
    status_file.write_text(json.dumps({"state": "building", "pid": os.getpid(), "fraction": 0.42,
                                       "seconds_left": 250, "log": ".venv/logs/llama-cpp-build.log"}))
    installed = {"llama_cpp": False}
    monkeypatch.setattr(local, "llama_cpp_importable", lambda: installed["llama_cpp"])
    config = make_config(precision="auto", runtime="auto", gguf_weights="f16")
    backend = LocalBackend("deepseek", config.learner, config.base_model_path(),
                           ModelRegistry(config.data_path / "models"),
                           llama_cpp_build=lambda: read_build_status(status_file))
    assert backend.llama_cpp_pending()
    assert backend.prepare().startswith("torch — llama.cpp is being built in the background (42%, about 4 min left")
    assert list((config.data_path / "models" / "gguf").glob("*.gguf")), "the served GGUF copy is made while it builds"
    first = _answer(backend, PROMPTS[0])
    assert backend.current().runtime.startswith("torch")
    assert "being built in the background (42%" in backend.runtime_status()

    # pip has put the package in place but has not finished: still torch
    installed["llama_cpp"] = True
    backend._llama_cpp_checked = 0.0
    _answer(backend, PROMPTS[0])
    assert backend.current().runtime.startswith("torch")

    status_file.write_text(json.dumps({"state": "done", "pid": os.getpid(), "fraction": 1.0,
                                       "seconds_left": 0, "log": ".venv/logs/llama-cpp-build.log"}))
    backend._llama_cpp_checked = 0.0  # the backend looks at most every 2 s
    second = _answer(backend, PROMPTS[0])
    loaded = backend.current()
    assert loaded.runtime == "llama.cpp (f16 GGUF)" and isinstance(loaded.fast, LlamaCppGenerator)
    assert backend.runtime_status() == "llama.cpp (f16 GGUF)"
    assert not backend.llama_cpp_pending()
    assert first.text and second.text


def test_a_stopped_or_failed_build_is_reported_as_such(tmp_path: Path) -> None:
    import json

    from dmac_core.learner.llama_cpp_build import read_build_status

    path = tmp_path / "status.json"
    assert read_build_status(path) is None
    dead = 2**22 + 12345  # above the default pid_max: no such process
    path.write_text(json.dumps({"state": "building", "pid": dead, "fraction": 0.3, "seconds_left": 100, "log": "x.log"}))
    stopped = read_build_status(path)
    assert stopped is not None and stopped.state == "stopped" and "restarts it" in stopped.describe()
    path.write_text(json.dumps({"state": "failed", "pid": dead, "fraction": 0.3, "seconds_left": 0, "log": "x.log"}))
    failed = read_build_status(path)
    assert failed is not None and "failed (log: x.log)" in failed.describe()
    path.write_text("{torn")
    assert read_build_status(path) is None


def test_export_refuses_what_llama_cpp_would_misread(tiny_hf: tuple[Any, Any], tmp_path: Path) -> None:
    model, _ = tiny_hf
    with pytest.raises(GGUFExportError, match="quant must be"):
        write_gguf(model, tmp_path / "x.gguf", bundled_gguf_path(), "q2_k")
    model.config.vocab_size += 1
    try:
        with pytest.raises(GGUFExportError, match="vocabulary"):
            write_gguf(model, tmp_path / "x.gguf", bundled_gguf_path(), "f16")
    finally:
        model.config.vocab_size -= 1
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


@pytest.mark.integration
def test_real_model_export_reproduces_the_bundled_gguf(real_model_dir: Path, tmp_path: Path) -> None:
    """The base model came from the bundled Q4_1 GGUF; exporting it back as Q4_1 must give the
    same bytes for every tensor (names, shapes, q/k permutation, quantization) and the same
    metadata (read with gguf's own reader) apart from the name."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32)
    path = write_gguf(model, tmp_path / "base.q4_1.gguf", bundled_gguf_path(), "q4_1")
    ours, bundled = GGUFReader(str(path)), GGUFReader(str(bundled_gguf_path()))
    assert {t.name: bytes(t.data) for t in ours.tensors} == {t.name: bytes(t.data) for t in bundled.tensors}
    differing = [k for k, f in bundled.fields.items() if k != "general.name" and f.contents() != ours.fields[k].contents()]
    assert differing == []
    fast = {key: value for key, _, _, value in read_metadata(bundled_gguf_path())}
    assert fast == {k: f.contents() for k, f in bundled.fields.items() if not k.startswith("GGUF.")}


@pytest.mark.integration
def test_real_model_served_by_default_through_llama_cpp(real_model_dir: Path, tmp_path: Path) -> None:
    from dmac_core.config import load_config

    shipped = load_config(Path(__file__).resolve().parents[1] / "config" / "config.yaml").learner
    backend = LocalBackend("deepseek", shipped, real_model_dir, ModelRegistry(tmp_path / "models"))
    answer = backend.generate([{"role": "user", "content": "What is the capital of Germany?"}], max_new_tokens=12)
    assert backend.current().runtime == "llama.cpp (f16 GGUF)"
    assert "Berlin" in answer.text


def test_setup_prepares_the_served_gguf(make_config: Callable[..., Config], capsys: pytest.CaptureFixture[str]) -> None:
    from dmac_core.__main__ import main

    config = _config(make_config)
    assert main(["--config", config.source, "setup"]) == 0
    assert "Local model runs on: llama.cpp (f16 GGUF)" in capsys.readouterr().out
    assert (config.data_path / "models" / "gguf" / "base.f16.gguf").is_file()


def test_a_promoted_run_is_ready_to_serve_when_the_job_ends(make_config: Callable[..., Config]) -> None:
    from dmac_core.system import LearningSystem
    from tests.gate_doubles import scripted_gate
    from tests.test_training import seed_ratings

    config = _config(make_config)
    system = LearningSystem(config)
    system.jobs.gate = scripted_gate(config, system.registry)  # the tiny model learns no visible answer
    seed_ratings(system.store)
    system.jobs.start(trigger="test")
    snap = system.jobs.wait(180)
    assert snap.state == "completed" and system.registry.served_id() == snap.version, (snap.message, snap.error)
    loaded = system.local_backend._loaded  # loaded by the job, before anyone asked
    assert loaded is not None and loaded.version == snap.version and loaded.runtime.startswith("llama.cpp (f16 GGUF)")
    assert (system.registry.models_dir / "gguf" / f"{snap.version}.f16.gguf").is_file()
