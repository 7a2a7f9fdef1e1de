# Set-up is part of every target: the first call creates .venv and installs fedsilo into it;
# later calls reuse it (re-installing only when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test test-fast smoke lint docs clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@echo "installing fedsilo and its dependencies into $(VENV) (once; about 2 minutes)..."
	$(VENV)/bin/python -m pip install -qq --upgrade pip
	$(VENV)/bin/python -m pip install -qq -e '.[test]'
	touch $(STAMP)

run: $(STAMP)          ## the default scenario (3 banks, 2 hospitals, offline MiniLM)
	$(VENV)/bin/fedsilo run $(ARGS)

test: $(STAMP)         ## lint, then the whole test suite, Ray simulations included (2 workers)
	$(VENV)/bin/ruff check src server clients strategies tests benchmarks tools
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile $(ARGS)

test-fast: $(STAMP)    ## lint, then the tests that start no process (seconds): the inner loop
	$(VENV)/bin/ruff check src server clients strategies tests benchmarks tools
	$(VENV)/bin/python -m pytest -q -m "not slow" $(ARGS)

smoke: $(STAMP)        ## a tiny locally built BERT: seconds per round
	$(VENV)/bin/fedsilo run configs/smoke.toml $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src server clients strategies tests benchmarks tools

docs: $(STAMP)         ## regenerate docs/configuration.md and pyproject's app config
	$(VENV)/bin/python tools/sync_docs.py

clean:
	rm -rf runs .fedsilo-cache
