# Everything runs in .venv, made on first use from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
STUBS := aftersales/v1/entry_pb2.py

.PHONY: venv protos run certs test test-fast bench lint clean

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

# A development CA, a server certificate and one client certificate per identity of the access
# table, for the secure mode (README, "Secure mode").
certs: $(STAMP)
	$(PY) -m server.certs var/certs

test: $(STAMP) $(STUBS)
	$(PY) -m pytest -q

# The edit loop: the rules, the validation and the use cases on an in-memory store; seconds.
test-fast: $(STAMP) $(STUBS)
	$(PY) -m pytest -q tests/unit tests/service

# What callers feel, RPC by RPC, on SQLite and PostgreSQL at 10k and 1M orders (README,
# "Benchmark"); figures, not assertions. Narrow it: BENCH_ARGS="--databases sqlite --sizes 10k".
BENCH_ARGS ?=
bench: $(STAMP) $(STUBS)
	$(PY) -m tests.bench $(BENCH_ARGS)

# Style, types (mypy --strict, [tool.mypy]), the layers' arrows ([tool.importlinter]) and the
# contract: buf lint and format (protos/buf.yaml), buf breaking against the last release, or the
# previous commit until there is one (protos/breaking.py).
lint: $(STAMP)
	$(PY) -m ruff check server client tests protos
	$(PY) -m ruff format --check server client tests protos
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/buf lint protos
	$(VENV)/bin/buf format --diff --exit-code protos
	$(PY) protos/breaking.py

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis .ruff_cache .mypy_cache *.egg-info clients/node/node_modules
	find . -name __pycache__ -prune -exec rm -rf {} +
