# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install system-deps run test test-fast bench bench-smoke clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed (set PYTHON=python3.x)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@$(PY) -m pip install --quiet --no-deps -e . >$(VENV)/pip-editable.log 2>&1 || { cat $(VENV)/pip-editable.log; exit 1; }  # the `resizer` CLI
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create the virtualenv and install pinned dependencies

# What the end-to-end tests need from the OS: redis-server, and chromium for the upload-page test.
system-deps:
	@missing=""; command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing (apt-get)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "The tests need:$$missing. Install them (Debian/Ubuntu: sudo apt-get install$$missing)." >&2; exit 1; fi; \
	fi

run: install  ## start Redis (if needed), the local S3 server, workers, the API and rq-dashboard
	$(PY) -m resizer.local

test: install system-deps  ## the whole suite: unit tests and end-to-end tests against real processes
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install  ## unit tests only (no redis-server, browser or servers needed)
	$(PY) -m pytest -m "not e2e" $(PYTEST_ARGS)

bench: install  ## full benchmark against the original design and thumbor: docs/performance.md, bench/results/
	$(PY) bench/bench.py $(BENCH_ARGS)  # e.g. BENCH_ARGS="--only e2e --workload png1 --systems ours,original"

bench-smoke: install  ## a quick run of every benchmark path but thumbor's (part of `make test`)
	$(PY) bench/bench.py --smoke

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
