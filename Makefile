# Registrar — developer commands. `make run` for the demo, `make test` for the whole suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
export DJANGO_SETTINGS_MODULE ?= portal.settings

.PHONY: help run test test-fast test-sqlite lint typecheck services browser idp-deps lock bench bench-scale bench-smoke bench-deps prod-check clean

help:
	@echo "make run    - demo on http://127.0.0.1:8000 (SQLite, no services needed)"
	@echo "make test   - whole suite on PostgreSQL and (less the browser tests) on SQLite, ruff, makemigrations"
	@echo "              --check and mypy, at once (logs in artifacts/test/)"
	@echo "make test-sqlite - the suite on SQLite alone"
	@echo "make lint   - ruff check and ruff format --check"
	@echo "make typecheck - mypy with django-stubs"
	@echo "make bench  - every benchmark in bench/, each on a freshly created and migrated database (slow; results"
	@echo "              appended to bench/RESULTS.md); make bench-smoke runs them all at tiny sizes"
	@echo "make bench-scale - search, dashboards and the framework report at 10M clients (seeded once, ~30 min)"
	@echo "make prod-check - start the production configuration (gunicorn, worker, beat as the systemd units do)"
	@echo "                  on PostgreSQL + Redis and put a registration, an approval and a sweep through it"

$(VENV)/.installed: requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Registrar needs Python 3.11)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.lock
	@touch $@

venv: $(VENV)/.installed

idp-deps:
	@if command -v node >/dev/null && [ -f tests/idp/package-lock.json ]; then \
		[ -d tests/idp/node_modules ] || (cd tests/idp && npm ci --no-audit --no-fund --loglevel=error); \
	else echo "note: Node.js not found; the demo IdP is replaced by the dry-run connector"; fi

# The demo is the one place embedded mode (SQLite, demo keys) is asked for; anything else needs real secrets.
run: venv idp-deps
	REGISTRAR_EMBEDDED=1 $(PY) manage.py migrate --noinput -v0
	REGISTRAR_EMBEDDED=1 $(PY) manage.py rundemo

services:
	@bash .ci/ensure-services

browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| { echo "error: could not install chromium (apt-get install chromium)"; exit 1; }; }

# Three stages at once (.ci/test-stages): the suite on PostgreSQL, the suite less the browser tests on SQLite,
# and the static checks (ruff, ruff format, makemigrations --check, mypy). Logs in artifacts/test/.
test: venv idp-deps services browser
	PYTEST_ARGS="$(PYTEST_ARGS)" bash .ci/test-stages

test-fast: venv services
	DJANGO_SETTINGS_MODULE=portal.settings_test $(VENV)/bin/pytest -q -m "not e2e and not integration and not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

# The suite on SQLite alone (the embedded database of make run), without the browser tests.
test-sqlite: venv idp-deps services
	env -u DATABASE_URL DJANGO_SETTINGS_MODULE=portal.settings_test REGISTRAR_TEST_DATABASE=sqlite \
		REGISTRAR_DATA_DIR=$(CURDIR)/artifacts/sqlite-data $(VENV)/bin/pytest -n 2 --dist loadgroup -q -m "not e2e" $(PYTEST_ARGS)

bench-deps:
	@for tool in wrk valgrind; do command -v $$tool >/dev/null || { \
		echo "installing Debian's $$tool for the benchmarks"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$tool >/dev/null) \
		|| { echo "error: could not install $$tool (apt-get install $$tool)"; exit 1; }; }; done

# bench/run_all.py: each script gets its own database (created, migrated, dropped afterwards). BENCH_ARGS, e.g.
# BENCH_ARGS="--only policy,sweep".
bench: venv idp-deps services bench-deps
	$(PY) bench/run_all.py $(BENCH_ARGS)

# Issue 22: inventory search, dashboards and the framework report at 10M clients against raw SQL. Seeds
# SCALE_DATABASE_URL once (about 30 min on 2 cores, 24 GB of disk) and reuses it on later runs; the encryption key
# is fixed so a reused database stays readable.
SCALE_CLIENTS ?= 10000000
SCALE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/registrar_scale
bench-scale: venv services
	DATABASE_URL=$(SCALE_DATABASE_URL) REGISTRAR_ENCRYPTION_KEY=$${REGISTRAR_ENCRYPTION_KEY:-YmVuY2gtc2NhbGUta2V5LW5vdC1mb3ItcmVhbC11c2U=} \
		$(PY) bench/inventory.py --seed $(SCALE_CLIENTS)

bench-smoke: venv idp-deps services bench-deps
	$(PY) bench/run_all.py --smoke $(BENCH_ARGS)

# contrib/prod_check.py: its own database, redis-server and test IdP; everything is removed afterwards.
prod-check: venv idp-deps services
	env -u DJANGO_SETTINGS_MODULE $(PY) contrib/prod_check.py

lock: venv
	(echo "# Pinned lock of every Python dependency (runtime + test). Regenerate with: make lock"; \
	 $(PIP) freeze --exclude-editable) > requirements.lock

clean:
	rm -rf data artifacts .pytest_cache .mypy_cache
