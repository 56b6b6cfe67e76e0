# Broadside: `make run` to try it, `make test` to check it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_HOST ?= 127.0.0.1
PG_PORT ?= 5432

.PHONY: install run test lint typecheck pytest clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# Everything on embedded defaults: SQLite, a filesystem broker, emails in var/mail/.
run: export DEBUG ?= true
run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	$(BIN)/python manage.py ensure_admin
	@echo "Broadside: http://127.0.0.1:8000   admin: http://127.0.0.1:8000/admin/"
	$(BIN)/honcho start -f Procfile.dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The files to check are listed in pyproject.toml ([tool.mypy] files).
typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@$(BIN)/python -c "import socket,sys; s=socket.socket(); s.settimeout(3); \
	  sys.exit(0) if s.connect_ex(('$(PG_HOST)', $(PG_PORT))) == 0 else \
	  sys.exit('PostgreSQL is not reachable at $(PG_HOST):$(PG_PORT). Start it (see README) or set DATABASE_URL.')"
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) var staticfiles
