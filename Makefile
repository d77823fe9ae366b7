# The two commands the README promises: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench-formats clean system-deps

$(STAMP): pyproject.toml setup.py resolver/_fastpath.c resolver/_ratelimit.h resolver/_proxy.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing Cordon and its test tools into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install --upgrade pip && $(PY) -m pip install -e '.[test]'; } \
		>$(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; exit 1; }
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Installs the Debian tools the suite drives (as root) or names the missing ones and stops.
system-deps:
	scripts/install-system-deps.sh

# Random order (pytest-randomly): the seed is printed; replay an order with --randomly-seed=N.
# Any skipped test fails the run unless CORDON_ALLOW_SKIP=1 (see tests/conftest.py).
test: system-deps $(STAMP) lint
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) -m blocklist.demo

bench-formats: $(STAMP)
	$(PY) bench/list_formats.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
