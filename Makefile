# ordermail — `make run` starts the daemon on the embedded default,
# `make test` runs the whole suite. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= var/ordermail.toml
PYTEST_ARGS ?=

.PHONY: install run test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: install
	$(BIN)/ordermail init --config $(CONFIG)
	$(BIN)/ordermail demo --config $(CONFIG)
	exec $(BIN)/ordermail serve --config $(CONFIG)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/orders_scale.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
