# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: install run test test-fast bench bench-smoke clean

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed (set PYTHON=python3.x)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create the virtualenv and install pinned dependencies

run: install  ## start Redis (if needed), the local S3 server, workers, the API and rq-dashboard
	$(PY) -m resizer.local

test: install  ## the whole suite: unit tests and end-to-end tests against real processes
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## unit tests only
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: install  ## full benchmark: writes docs/performance.md and bench/results/
	$(PY) bench/bench.py

bench-smoke: install
	$(PY) bench/bench.py --smoke

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
