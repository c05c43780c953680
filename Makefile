# The quick start: `make demo` runs the example project against the local
# emulator; `make test` runs the test suite. Both set up .venv themselves.
# `make check` runs the quality gates CI runs besides the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SETUP_LOG := $(VENV)/setup.log

.PHONY: demo demo-no-serve test lint package-check matrix check clean

# The set-up is quiet unless it fails: pip's output goes to $(SETUP_LOG),
# whose last lines are shown if a step fails; what a person reads is the demo.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.10 or newer is needed (PYTHON=$(PYTHON) is %d.%d)" % sys.version_info[:2] if sys.version_info < (3, 10) else 0)'
	@echo "Setting up $(VENV): a minute or so the first time (log: $(SETUP_LOG))."
	@mkdir -p $(VENV)
	@{ $(PYTHON) -m venv $(VENV) \
	  && $(BIN)/python -m pip install --upgrade pip \
	  && $(BIN)/python -m pip install -e '.[test,services,browser,example,dev]'; } > $(SETUP_LOG) 2>&1 \
	  || { tail -n 60 $(SETUP_LOG); echo "make: setting up $(VENV) failed; the last lines of its log are above, all of it is in $(SETUP_LOG)." >&2; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python manage.py migrate --no-input --verbosity 0
	@$(BIN)/python manage.py demo $(DEMO_ARGS)

demo-no-serve: $(STAMP)
	@$(BIN)/python manage.py migrate --no-input --verbosity 0
	@$(BIN)/python manage.py demo --no-serve $(DEMO_ARGS)

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
