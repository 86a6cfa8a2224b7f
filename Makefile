# DMac Learning Workbench. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | md5sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8501
API_PORT ?= 8502
# llama.cpp serves the local model. PyPI has only its source, so it is compiled here, for this
# CPU, once per venv (about 4–5 minutes on 2 cores; pip caches the wheel, so later venvs take
# seconds). `make run` builds it in the background and opens the workbench at once (the torch
# loop answers until it is ready); `make setup` and `make test` wait for it. LLAMA_CPP=off
# skips it: the torch decode loop then serves (slower; the Chat page says so).
LLAMA_CPP ?= on
BOOTSTRAP := $(PYTHON) scripts/bootstrap.py

.PHONY: setup run test test-fast e2e bench doctor clean-venv llama-cpp llama-cpp-background

setup: $(STAMP) llama-cpp base-model

# Progress on one line per step; pip's own output goes to .venv/logs/setup.log.
$(STAMP): requirements.txt
	@$(BOOTSTRAP) venv --python $(PYTHON)
	@touch $@

llama-cpp: $(STAMP)
	@$(if $(filter on,$(LLAMA_CPP)),$(BOOTSTRAP) llama)

llama-cpp-background: $(STAMP)
	@$(if $(filter on,$(LLAMA_CPP)),$(BOOTSTRAP) llama --background)

.PHONY: base-model
base-model: $(STAMP)
	@$(PY) -m dmac_core setup

run: $(STAMP) llama-cpp-background base-model
	$(PY) -m dmac_core serve --address $(HOST) --port $(PORT) --api-port $(API_PORT)

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
