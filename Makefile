# `make run`: the whole system on embedded defaults (SQLite + Celery filesystem transport),
# no server needed. `make test`: lint + the whole suite on PostgreSQL and Redis (the
# property-based tests seeded: every run draws the same examples), then `make test-amqp`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
WEB_PORT ?= 8000
DEMO_USER ?= admin
DEMO_PASSWORD ?= admin-demo-password

# The suite's services: the machine's PostgreSQL and Redis.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/txbroker
TEST_BROKER_URL ?= redis://127.0.0.1:6379/15
# The tests that start real workers (marked integration) and those of the broker itself
# (marked broker: wake-ups) again on RabbitMQ, in a queue (and control exchange) of their
# own on the default virtual host; the cache (throttle counters) on the suite's Redis, as a
# RabbitMQ deployment sets REDIS_URL.
TEST_AMQP_BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672//
TEST_AMQP_QUEUE ?= txbroker-tests
AMQP_TESTS ?= txbroker payments orders points notifications config -m "integration or broker"

.PHONY: run setup test test-amqp test-txbroker fuzz lint chaos chaos-amqp bench bench-db bench-peers bench-embedded bench-history bench-memory clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime
	DJANGO_DEBUG=1 $(BIN)/python manage.py migrate --no-input
	DJANGO_DEBUG=1 $(BIN)/python manage.py collectstatic --no-input --verbosity 0
	DJANGO_DEBUG=1 $(BIN)/python manage.py txbroker_schedule
	DJANGO_DEBUG=1 $(BIN)/python manage.py demo_superuser --username $(DEMO_USER) --password $(DEMO_PASSWORD) --exists-ok

run: setup
	@echo ""
	@echo "  Start here:         http://127.0.0.1:$(WEB_PORT)/   (WEB_PORT=$(WEB_PORT): make run WEB_PORT=... for another)"
	@echo "  API docs (Swagger): http://127.0.0.1:$(WEB_PORT)/api/docs/"
	@echo "  Admin:              http://127.0.0.1:$(WEB_PORT)/admin/   ($(DEMO_USER) / $(DEMO_PASSWORD))"
	@echo "  Dashboard:          http://127.0.0.1:$(WEB_PORT)/admin/txbroker/dashboard/"
	@echo "  Metrics, health:    http://127.0.0.1:$(WEB_PORT)/metrics  http://127.0.0.1:$(WEB_PORT)/healthz"
	@echo ""
	rm -rf var/prometheus && mkdir -p var/prometheus
	DJANGO_DEBUG=1 WEB_PORT=$(WEB_PORT) PROMETHEUS_MULTIPROC_DIR=$(CURDIR)/var/prometheus \
		PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho start

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(VENV)/.dev lint
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
		$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-amqp

# `make test-amqp`: AMQP_TESTS (above) on RabbitMQ; tests that need Redis itself (they wipe
# it or read its keys) are skipped there.
test-amqp: $(VENV)/.dev
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_AMQP_BROKER_URL) CELERY_QUEUE=$(TEST_AMQP_QUEUE) \
		REDIS_URL=$(TEST_BROKER_URL) $(BIN)/python -m pytest $(AMQP_TESTS) $(AMQP_PYTEST_ARGS)

# `make test-txbroker`: txbroker's own tests alone, on txbroker's test project
# (txbroker/tests/project, txbroker/tests/standalone.ini): none of the application's apps or
# settings. `make test` runs them too, under the project's settings.
test-txbroker: $(VENV)/.dev
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) \
		$(BIN)/python -m pytest -c txbroker/tests/standalone.ini txbroker/tests $(PYTEST_ARGS)

# `make fuzz`: the property-based tests (schemathesis on every API operation, hypothesis)
# with a random seed and FUZZ_MAX_EXAMPLES examples per operation (or test); not part of
# `make test`. The seed is printed: `make fuzz FUZZ_SEED=<seed>` repeats a run.
FUZZ_MAX_EXAMPLES ?= 200
FUZZ_TESTS ?= config/tests/test_api_fuzz.py points/tests/test_services.py
ifndef FUZZ_SEED
FUZZ_SEED := $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')
endif
fuzz: $(VENV)/.dev
	@echo "fuzz seed: $(FUZZ_SEED) (make fuzz FUZZ_SEED=$(FUZZ_SEED) repeats this run)"
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) FUZZ_MAX_EXAMPLES=$(FUZZ_MAX_EXAMPLES) \
		$(BIN)/python -m pytest --hypothesis-profile=fuzz --hypothesis-seed=$(FUZZ_SEED) $(FUZZ_TESTS) $(PYTEST_ARGS)

# `make chaos`: 1,000 payments over HTTP to gunicorn + two Celery workers + beat under every
# fault kind: processes SIGKILLed and frozen, Redis wiped, PostgreSQL connections cut and the
# server crashed, a worker and beat five minutes ahead, poison messages, slow checks; then
# the invariants, txbroker beside the naive design. Its own PostgreSQL cluster and Redis.
CHAOS_ARGS ?= --payments 1000 --concurrency 16 --faults all --baseline --json var/chaos/report.json
chaos: $(VENV)/.dev
	DJANGO_DEBUG=1 DJANGO_EXTRA_APPS=harness $(BIN)/python manage.py chaos $(CHAOS_ARGS)

# `make chaos-amqp`: 200 payments on a RabbitMQ node of the run's own, restarted mid-load,
# with SIGKILLs and the fault points; needs Debian's rabbitmq-server installed.
CHAOS_AMQP_ARGS ?= --broker amqp --payments 200 --concurrency 8 --faults kill,rabbitmq-restart \
	--rabbitmq-every 20 --json var/chaos/amqp-report.json
chaos-amqp: $(VENV)/.dev
	DJANGO_DEBUG=1 DJANGO_EXTRA_APPS=harness $(BIN)/python manage.py chaos $(CHAOS_AMQP_ARGS)

# `make bench`: raw / naive / txbroker (and txbroker at half its rate for latency) on
# PostgreSQL + Redis with a real worker pool, each against fresh tables in its own
# database and Redis db. Figures to var/bench/report.json, latency plot to var/bench/.
BENCH_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/txbroker_bench
BENCH_BROKER_URL ?= redis://127.0.0.1:6379/12
BENCH_ARGS ?= --payments 2000 --concurrency 3 --workers 4 --repeat 2 --designs raw,naive,txbroker,txbroker_orm \
	--json var/bench/report.json --plot var/bench/latency.png
BENCH_ENV = DJANGO_DEBUG=1 DJANGO_EXTRA_APPS=harness DJANGO_VAR_DIR=var/bench \
	DATABASE_URL=$(BENCH_DATABASE_URL) CELERY_BROKER_URL=$(BENCH_BROKER_URL)
bench-db: $(VENV)/.dev
	$(BIN)/python -m harness.bench.createdb $(BENCH_DATABASE_URL)
	$(BENCH_ENV) $(BIN)/python manage.py migrate --no-input -v0
bench: bench-db
	$(BENCH_ENV) $(BIN)/python manage.py bench $(BENCH_ARGS)
# txbroker against its peers (django-celery-outbox, procrastinate: harness/peers/), once each.
BENCH_PEERS_ARGS ?= --payments 2000 --concurrency 3 --workers 4 --no-half-rate \
	--designs raw,naive,txbroker,celery_outbox,procrastinate --json var/bench/peers.json
bench-peers: bench-db
	$(BENCH_ENV) $(BIN)/python manage.py bench $(BENCH_PEERS_ARGS)
# The same bench on the embedded defaults: SQLite + the filesystem transport.
bench-embedded: $(VENV)/.dev
	env -u DATABASE_URL -u CELERY_BROKER_URL DJANGO_DEBUG=1 DJANGO_EXTRA_APPS=harness \
		DJANGO_VAR_DIR=var/bench-embedded $(BIN)/python manage.py migrate --no-input -v0
	env -u DATABASE_URL -u CELERY_BROKER_URL DJANGO_DEBUG=1 DJANGO_EXTRA_APPS=harness \
		DJANGO_VAR_DIR=var/bench-embedded $(BIN)/python manage.py bench --payments 500 --workers 2 \
		--json var/bench-embedded/report.json
# Check-back pass, sweep and list pages with 1,000 vs 1,000,000 finished messages.
bench-history: bench-db
	$(BENCH_ENV) $(BIN)/python manage.py bench --history --json var/bench/history.json
# Worker resident memory over 100,000 deliveries.
bench-memory: bench-db
	$(BENCH_ENV) $(BIN)/python manage.py bench --memory --json var/bench/memory.json

clean:
	rm -rf var .pytest_cache
