# voicecalls — `make run` serves the API on http://127.0.0.1:8000; `make test` checks everything.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_WORKERS ?= 2
# Local development and tests run with DEBUG on (dev secrets allowed); production
# sets DEBUG off and real secrets.
export DEBUG ?= 1
# Local webhook receivers (http://127.0.0.1:...) are allowed in development and tests.
export WEBHOOKS_ALLOW_PRIVATE_URLS ?= 1

.PHONY: install run serve serve-streams test test-sqlite test-postgres fuzz soak soak-short lint format schema migrations-check bench bench-streams clean sdk sdk-test

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

run: install
	@$(PY) scripts/dev_env.py
	$(PY) manage.py migrate --noinput
	$(PY) manage.py createcachetable
	$(PY) manage.py load_demo --org demo
	@$(PY) manage.py first_run_key --org demo
	scripts/run_dev.sh $(PY) $(PORT)

# Production-style server (set DEBUG=0 and real secrets in the environment).
serve: install
	$(VENV)/bin/gunicorn voicecalls.wsgi:application -c gunicorn.conf.py

# The live call streams' service (ASGI, uvicorn workers), beside `serve`: the proxy
# sends /api/v1/calls/*/stream and /admin/calls/call/*/stream/ here (README).
serve-streams: install
	$(VENV)/bin/gunicorn voicecalls.asgi:application -c gunicorn.streams.conf.py

test: install lint migrations-check fuzz soak-short test-sqlite test-postgres agent-test sdk-test

test-sqlite: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) -q

# The same suite on a throwaway PostgreSQL; tests marked `postgres` must run here.
test-postgres: install
	scripts/with_postgres.sh env VOICECALLS_FAIL_ON_SKIP=1 $(PY) -m pytest -n $(PYTEST_WORKERS) -q -m "not browser"

# Property-based API fuzzing: schemathesis against the committed openapi.yaml on a live
# gunicorn + PostgreSQL + fake LiveKit (schemathesis.toml, scripts/fuzz/).
fuzz: install
	scripts/with_postgres.sh scripts/fuzz/run.sh $(VENV)

# The soak (README "Soak", docs/reliability.md): the fleet on this machine (HAProxy, two
# gunicorn instances, PgBouncer, streams, two db_workers, two expire_calls loops, a fake
# LiveKit, a customer receiver) under SOAK_CALLS calls in flight for SOAK_MINUTES, with
# faults; fails when an invariant is violated. Too long for `make test`.
SOAK_CALLS ?= 200
SOAK_MINUTES ?= 10
soak: install
	SOAK_CALLS=$(SOAK_CALLS) SOAK_MINUTES=$(SOAK_MINUTES) scripts/with_postgres.sh $(PY) -m soak

# Its one-minute version, so the harness cannot rot: fewer calls, two faults.
soak-short: install
	SOAK_CALLS=25 SOAK_MINUTES=1 SOAK_FAULTS=kill_gunicorn_worker,postgres_restart \
		SOAK_DRAIN_SECONDS=180 scripts/with_postgres.sh $(PY) -m soak

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrations-check: install
	$(PY) manage.py makemigrations --check --dry-run

schema: install
	$(PY) manage.py spectacular --file openapi.yaml --validate --fail-on-warn

# Client SDKs generated from openapi.yaml into sdk/ (git-ignored): Python with
# openapi-python-client, TypeScript with @hey-api/openapi-ts; type-checked (mypy, tsc)
# together with the examples and the TypeScript tests.
sdk-config/node_modules/.installed: sdk-config/package.json sdk-config/package-lock.json
	cd sdk-config && npm ci --no-audit --no-fund --loglevel=error
	touch $@

sdk: install sdk-config/node_modules/.installed
	rm -rf sdk/python sdk/build
	$(VENV)/bin/openapi-python-client generate --path openapi.yaml --meta setup \
		--config sdk-config/python.yaml --output-path sdk/python
	$(VENV)/bin/mypy --strict --cache-dir sdk/.mypy_cache sdk/python/voicecalls_client \
		examples/quickstart.py
	cd sdk-config && npx --no-install openapi-ts && npx --no-install tsc -p tsconfig.json

# Both clients against a live server (gunicorn on loopback, throwaway PostgreSQL).
sdk-test: sdk
	scripts/with_postgres.sh env VOICECALLS_SDK_TESTS=1 $(PY) -m pytest -q -p no:xdist tests/sdk

# Benchmarks at a million calls on a throwaway PostgreSQL tuned like a small production
# server (bench/README.md). Slow (the load alone takes minutes): never part of `make test`.
# BENCH_CALLS=100000 for a quick run; BENCH_ARGS='--only transcript' for some scenarios.
BENCH_PG_OPTS ?= -c shared_buffers=1GB -c effective_cache_size=8GB -c work_mem=16MB \
	-c maintenance_work_mem=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min \
	-c random_page_cost=1.1
bench: install
	PG_EXTRA_OPTS="$(BENCH_PG_OPTS)" scripts/with_postgres.sh $(PY) -m bench all $(BENCH_ARGS)

# Live call streams under load (bench/README.md "Live streams"): 1,000 streams while calls
# run, POST /calls and the lists timed with and without them. BENCH_CALLS defaults to
# 50,000 here.
bench-streams: install
	PG_EXTRA_OPTS="$(BENCH_PG_OPTS)" scripts/with_postgres.sh $(PY) -m bench.streams

clean:
	rm -rf $(VENV) db.sqlite3*

# --- The voice-agent worker (agent/): its own venv, its own (large) requirements. ---
.PHONY: agent agent-install agent-test
AGENT_VENV ?= agent/.venv
AGENT_PY := $(AGENT_VENV)/bin/python

$(AGENT_VENV)/.installed: agent/requirements.txt
	test -x $(AGENT_PY) || python3 -m venv $(AGENT_VENV)
	$(AGENT_PY) -m pip install -q --disable-pip-version-check -r agent/requirements.txt
	touch $@

agent-install: $(AGENT_VENV)/.installed

# Runs the worker against the API on $(PORT) and LiveKit (defaults: `livekit-server --dev`).
# Needs VOICECALLS_AGENT_KEY from `manage.py create_api_key worker --agent`.
agent: agent-install
	VOICECALLS_API_URL=$${VOICECALLS_API_URL:-http://127.0.0.1:$(PORT)} \
	LIVEKIT_URL=$${LIVEKIT_URL:-ws://localhost:7880} \
	LIVEKIT_API_KEY=$${LIVEKIT_API_KEY:-devkey} \
	LIVEKIT_API_SECRET=$${LIVEKIT_API_SECRET:-secret} \
	$(AGENT_PY) -m agent dev

# Three at once: the suite mostly waits on real timeouts (a hung provider, a silent
# caller), ~50 s of CPU in ~5 min serially; three processes take ~2 min.
AGENT_PYTEST_WORKERS ?= 3
# The worker's tests serve the web app from $(VENV) as a live server, so both venvs.
agent-test: install agent-install
	cd agent && VOICECALLS_WEB_PYTHON=$(abspath $(PY)) $(abspath $(AGENT_VENV))/bin/pytest -q -n $(AGENT_PYTEST_WORKERS)
