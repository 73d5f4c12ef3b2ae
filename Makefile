# ordermail — `make run` starts the daemon on the embedded default,
# `make test` runs the whole suite, `make fuzz` the property-based tests
# with FUZZ_EXAMPLES (100,000) examples each. All set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= var/ordermail.toml
PYTEST_ARGS ?=
FUZZ_EXAMPLES ?= 100000
FUZZ_TESTS ?= tests/test_fuzz_*.py

LOCALES := templates/locale

.PHONY: install run test fuzz bench messages clean

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

# Long (hours for all of them): run it in the background, or pick some with
# FUZZ_TESTS=tests/test_fuzz_tokens.py, or fewer with FUZZ_EXAMPLES=10000.
fuzz: install
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest $(FUZZ_TESTS) $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/orders_scale.py

# The English of the code and the templates into $(LOCALES)/ordermail.pot, then into
# every catalog (new messages empty, changed ones fuzzy): translate them in Poedit or
# Weblate, commit the .po files. A new language: pybabel init -l xx (README: Languages).
messages: install
	$(BIN)/pybabel extract --mapping-file babel.cfg --keyword Said --keyword N_ --width 100 \
	    --sort-by-file --project ordermail --copyright-holder ordermail --msgid-bugs-address "" \
	    --output-file $(LOCALES)/ordermail.pot .
	$(BIN)/pybabel update --input-file $(LOCALES)/ordermail.pot --output-dir $(LOCALES) \
	    --domain ordermail --width 100 --ignore-obsolete

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
