# The two commands the README promises: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench-formats clean

$(STAMP): pyproject.toml setup.py resolver/_fastpath.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m blocklist.demo

bench-formats: $(STAMP)
	$(PY) bench/list_formats.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
