# Everything runs in a local virtualenv that the first target creates, so a fresh clone needs
# nothing but python3. The demo installs only what nsml-etl needs to run; the test tools (the
# dev extra: pytest, hypothesis, ruff, trustme, the database drivers) come with the first
# target that uses them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(PIP) -e '.[dev]'
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

demo: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

test: $(DEV_STAMP)
	$(BIN)/python -m pytest -q

lint: $(DEV_STAMP)
	$(BIN)/ruff check etl tests scripts bench

bench: $(DEV_STAMP)
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) demo .pytest_cache .hypothesis
