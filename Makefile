# Two commands on a fresh machine: `make quickstart`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed

.PHONY: venv quickstart test lint format bench lock clean browser

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/pip install --quiet uv
	# Bytecode compiled once here: imports read it even where PYTHONDONTWRITEBYTECODE is set, and
	# without it every CLI call compiled Feast, MLflow & co. again (a batch job's imports 20 → 11 s).
	$(UV) pip install --python $(BIN)/python --compile-bytecode -r requirements.lock
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

# Headless Chromium + its WebDriver for the review-page browser test (Debian packages, as root).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		chromium --version 2>/dev/null; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "browser: chromium and chromium-driver are missing and this user cannot apt-get install them;" \
		     "the browser test will skip (or fail under CI=true)"; \
	fi

test: lint browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) data
