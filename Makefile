# Everything runs in .venv, made on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
STUBS := aftersales/v1/entry_pb2.py

.PHONY: venv protos run test bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The generated stubs are committed; `make protos` regenerates them after a .proto change.
protos: $(STAMP)
	$(PY) protos/generate.py

$(STUBS):
	$(MAKE) protos

run: $(STAMP) $(STUBS)
	$(PY) -m server --demo

test: $(STAMP) $(STUBS)
	$(PY) -m pytest -q

bench: $(STAMP) $(STUBS)
	$(PY) -m tests.benchmark --postgres

lint: $(STAMP)
	$(PY) -m ruff check server client tests protos
	$(PY) -m ruff format --check server client tests protos

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis .ruff_cache *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
