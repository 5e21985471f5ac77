# The two commands a new user runs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.songtrace-installed
SAT_STAMP := $(VENV)/.songtrace-sat-installed
PYTEST_ARGS ?=

.PHONY: setup setup-sat demo test lint bench clean browser

setup: $(STAMP)

# The stable-audio-tools extra: its model code only. stable-audio-tools 0.0.19 pins heavy training/UI
# packages (and through them another torch), so it and torchaudio go in with --no-deps beside what its
# model code imports; tools/setup_sat.py drops torchaudio's CUDA-linked extension on a CPU torch
# (it cannot load there, and transformers imports torchaudio when installed) and checks the import.
setup-sat: $(SAT_STAMP)

$(SAT_STAMP): $(STAMP) tools/setup_sat.py
	$(PY) -m pip install -q --no-deps stable-audio-tools==0.0.19 torchaudio==2.11.0 alias-free-torch==0.0.6 einops-exts==0.0.4
	$(PY) -m pip install -q "einops>=0.7"
	$(PY) tools/setup_sat.py
	touch $(SAT_STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-deps tinysoundfont
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/songtrace demo

# Debian's chromium for the report's browser test (tests/report): installed only when missing and only where
# apt-get can run as root (CI, a fresh machine); elsewhere that test is skipped with the reason (CI=true fails it).
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the report's browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq </dev/null && apt-get install -y -qq chromium </dev/null >/dev/null; \
	else echo "note: no chromium found; the report's browser test will be skipped"; fi

test: $(STAMP) $(SAT_STAMP) browser
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/demo_pipeline.py

clean:
	rm -rf $(VENV) songtrace-data .pytest_cache
