# One-command entry points. VENV can be overridden (CI uses a fresh temporary one).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-test demo test lint

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# Stage I -> Stage II -> evaluation on the embedded demo data (generated on first use).
demo: install
	$(PY) -m aptpose_jax.demo_pipeline --workdir=workdirs/demo

test: install-test
	$(PY) -m pytest -q tests

lint: install-test
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
