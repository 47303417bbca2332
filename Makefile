# The front door: `make serve` runs podgate, `make test` runs the tests, `make bench` the benchmark.
# All install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/podgate serve $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

bench: $(BIN)/.installed
	$(BIN)/python bench/run.py $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/podgate policy lint policies

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
