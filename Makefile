# dfarm: `make demo` brings up a local cluster and runs the examples;
# `make test` runs the linters (ruff, mypy) and the whole test suite; `make test-loaded`
# runs the suite three times beside two CPU hogs. Each creates .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CONTAINER_PACKAGES := bubblewrap podman runc uidmap busybox-static

.PHONY: venv demo test test-fast test-loaded lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@# The browser tests drive Debian's chromium (never a browser Playwright downloads).
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
	      echo "make: could not install chromium: the browser tests will be skipped"; \
	  else \
	    echo "make: /usr/bin/chromium is missing (as root: apt-get install chromium):" \
	      "the browser tests will be skipped"; \
	  fi; \
	fi
	@# The container tests run Debian's bubblewrap, podman (with runc) and busybox-static.
	@if ! command -v bwrap >/dev/null || ! command -v podman >/dev/null \
	    || ! command -v busybox >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q $(CONTAINER_PACKAGES) >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q $(CONTAINER_PACKAGES) >/dev/null; } || \
	      echo "make: could not install $(CONTAINER_PACKAGES): the container tests will be skipped"; \
	  else \
	    echo "make: bwrap, podman or busybox is missing (as root: apt-get install" \
	      "$(CONTAINER_PACKAGES)): the container tests will be skipped"; \
	  fi; \
	fi
	touch $@

venv: $(STAMP)

demo: $(STAMP)
	bash submit_examples/demo.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The whole suite three times in a row beside two CPU-burning processes.
test-loaded: $(TEST_STAMP)
	PYTHON=$(BIN)/python .ci/test-loaded

format: $(TEST_STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]' || \
	  echo "bench: the bench extra (HyperQueue, Dask) did not install; missing baselines are skipped"
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) demo-results .pytest_cache .ruff_cache .mypy_cache
