# The quick start: `make demo` runs the example project against the local
# emulator; `make test` runs the test suite. Both set up .venv themselves.
# `make check` runs the quality gates CI runs besides the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-no-serve test lint package-check matrix check clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.10 or newer is needed (PYTHON=$(PYTHON) is %d.%d)" % sys.version_info[:2] if sys.version_info < (3, 10) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,services,browser,example,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python manage.py migrate --no-input --verbosity 0
	$(BIN)/python manage.py demo $(DEMO_ARGS)

demo-no-serve: $(STAMP)
	$(BIN)/python manage.py migrate --no-input --verbosity 0
	$(BIN)/python manage.py demo --no-serve $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check autumn_django tests example_project benchmarks
	$(BIN)/ruff format --check autumn_django tests example_project benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

package-check: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist . >/dev/null
	$(BIN)/python .ci/wheel_check.py dist

matrix: $(STAMP)
	$(BIN)/nox --session "tests(django='4.2')"

check: lint package-check matrix

clean:
	rm -rf $(VENV) .nox var build dist *.egg-info
