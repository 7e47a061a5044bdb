# The two commands of the README: `make up` runs Interlock, `make test` runs the tests.
# Both create .venv and install the project from pyproject.toml on first use.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test test-fast test-e2e install clean chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/interlock up $(ARGS)

# The browser tests drive Debian's chromium (never `playwright install`); as root, install it.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		apt-get update && apt-get install -y chromium; fi

test: $(STAMP) chromium
	$(BIN)/python -m pytest --durations=30 $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e and not chaos and not browser" $(ARGS)

test-e2e: $(STAMP) chromium
	$(BIN)/python -m pytest -m "e2e or chaos or browser" $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache

# Benchmarks of issue 10 (not tests): ours and the anchors side by side; see BENCHMARKS.md.
.PHONY: bench bench-setup
bench-setup:
	bench/setup_anchors.sh

bench: $(STAMP)
	test -x bench/.anchor-venv/bin/python || bench/setup_anchors.sh
	$(BIN)/python -m bench.run_all $(ARGS)
