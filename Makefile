# The front door: `make serve` runs podgate, `make test` runs the tests, `make bench` the benchmark.
# All install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

AUDIT_VENV ?= .audit-venv

.PHONY: serve test bench lint layers audit clean

# Two installs in one venv: what serving needs (the package and its dependencies), and that plus
# the test extras. `make serve` on a fresh machine installs only the first; `make test` the second
# (which also satisfies serve).
$(BIN)/.installed-serve: pyproject.toml
	if [ $(BIN)/.installed -nt pyproject.toml ]; then exit 0; fi; \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/pip install --quiet --upgrade pip && \
	$(BIN)/pip install --quiet -e .
	touch $@

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(BIN)/.installed-serve

serve: $(BIN)/.installed-serve
	$(BIN)/podgate serve $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

# wrk (C) drives the workers comparison, so that the client does not take the cores it measures;
# installed with apt-get where that is possible, else the benchmark says it uses its Python client.
bench: $(BIN)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { timeout 300 apt-get install -y -qq wrk >/dev/null 2>&1 || \
	    { timeout 300 apt-get update -qq >/dev/null 2>&1 && timeout 300 apt-get install -y -qq wrk >/dev/null 2>&1; }; }; } || \
	  echo "make bench: wrk not installed (apt-get install wrk); the workers comparison uses the Python client"
	$(BIN)/python bench/run.py $(ARGS)

# Known vulnerabilities in the installed dependency set (pip-audit, in a venv of its own so it
# does not change the set it audits); see .ci/audit.py for what happens offline.
$(AUDIT_VENV)/bin/pip-audit:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/pip install --quiet 'pip-audit>=2.7'

audit: $(BIN)/.installed $(AUDIT_VENV)/bin/pip-audit
	$(BIN)/python .ci/audit.py $(AUDIT_VENV)/bin/pip-audit $(BIN)/python

# The architecture's layers (cli -> server -> core; the core serves no HTTP), see pyproject.toml.
layers: $(BIN)/.installed
	$(BIN)/lint-imports

lint: $(BIN)/.installed
	$(BIN)/podgate policy lint policies

clean:
	rm -rf $(VENV) $(AUDIT_VENV) build *.egg-info .pytest_cache
