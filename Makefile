# Two commands on a fresh machine: `make quickstart`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed

.PHONY: venv quickstart test lint format bench lock clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/pip install --quiet uv
	$(UV) pip install --python $(BIN)/python -r requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Refresh the pinned versions from pyproject's lower bounds (run by a developer, then commit).
lock:
	test -x $(UV) || ($(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv)
	$(UV) pip compile pyproject.toml --extra dev --extra spark --python-version 3.11 -o requirements.lock

quickstart: venv
	$(BIN)/crm-predict quickstart

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) data
