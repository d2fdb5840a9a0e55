# Everything runs in a local virtualenv that the first target creates, so a fresh clone needs
# nothing but python3. The demo installs only what nsml-etl needs to run; the test tools (the
# dev extra: pytest, hypothesis, ruff, trustme, the database drivers) come with the first
# target that uses them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The versions the tests passed with (see `make lock`); pyproject's ranges stay open for users.
CONSTRAINTS := constraints.txt
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS)
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# Test workers (pytest-xdist): the tests mostly wait on loopback HTTP and the databases, so
# twice the two cores keeps both busy; 4 workers ran the suite in a third of the serial time.
TEST_WORKERS ?= 4

.PHONY: install demo test lint format typecheck bench lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
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
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check etl tests scripts bench
	$(BIN)/ruff format --check etl tests scripts bench
	$(BIN)/lint-imports

format: $(DEV_STAMP)
	$(BIN)/ruff format etl tests scripts bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

bench: $(DEV_STAMP)
	$(BIN)/python bench/bench.py

# Refresh constraints.txt: the newest releases pyproject's ranges admit, resolved in a throwaway
# virtualenv; then run `make test` and commit both if it passes.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --disable-pip-version-check '.[dev]'
	{ echo "# Tested versions of every package nsml-etl and its dev extra install (make lock)."; \
	  .lock-venv/bin/python -m pip freeze --exclude nsml-etl; } > $(CONSTRAINTS)
	rm -rf .lock-venv build

clean:
	rm -rf $(VENV) demo .pytest_cache .hypothesis
