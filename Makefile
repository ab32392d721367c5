# chatsite: the two commands a newcomer needs are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
HOST ?= 127.0.0.1

# Tests run against the real PostgreSQL and Redis (these defaults are this machine's services).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/chatsite
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

# The database and Redis of every target that touches the database (run, serve, release, migrate,
# manage, cluster): var/cluster.env when it exists (`make cluster` writes it), a variable set in
# the environment winning; each target says which it uses (bin/with-env).
WITH_ENV := . bin/with-env && chatsite_describe_env &&

.PHONY: run serve release test lint format messages venv migrate manage cluster clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt requirements-cluster.txt requirements.txt $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# A secret key for local runs, made once and kept out of git; production sets SECRET_KEY itself.
var/secret_key:
	mkdir -p var
	$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@

# run: install, migrate, collect static files and serve on http://$(HOST):$(PORT).
# Without DATABASE_URL / REDIS_URL (nor var/cluster.env): a SQLite file and the in-memory layer.
run: $(VENV)/.installed var/secret_key
	$(WITH_ENV) export SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}" && \
	$(PY) manage.py migrate --noinput && \
	$(PY) manage.py collectstatic --noinput --verbosity 0 && \
	exec $(PY) -m chatsite.serve --bind $(HOST) --port $(PORT)

# serve: one node of several (SERVER_ID, PORT, DATABASE_URL, REDIS_URL set by you). It neither
# migrates nor collects static files, so several nodes can start at once: run `make release` first.
serve: $(VENV)/.installed var/secret_key
	@test -f staticfiles/staticfiles.json || { echo "static files are not collected: run 'make release' first"; exit 1; }
	$(WITH_ENV) export SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}" && \
	exec $(PY) -m chatsite.serve --bind $(HOST) --port $(PORT)

# release: once per deploy, from one place (the Procfile's release: line): migrate, collect static.
release: $(VENV)/.installed var/secret_key
	$(WITH_ENV) export SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}" && \
	$(PY) manage.py migrate --noinput && \
	$(PY) manage.py collectstatic --noinput --verbosity 0

migrate: $(VENV)/.installed var/secret_key
	$(WITH_ENV) SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}" $(PY) manage.py migrate --noinput

# cluster: 3 nodes behind nginx on http://127.0.0.1:8080 (bin/cluster); Ctrl-C stops all. It
# writes var/cluster.env (its DATABASE_URL, REDIS_URL), which the targets above then load too.
cluster: $(VENV)/.installed
	bin/cluster

# manage: any manage.py command with this checkout's settings, e.g. make manage ARGS=createsuperuser
# (after `make cluster`: on the cluster's PostgreSQL, from var/cluster.env)
manage: $(VENV)/.installed var/secret_key
	$(WITH_ENV) SECRET_KEY="$${SECRET_KEY:-$$(cat var/secret_key)}" $(PY) manage.py $(ARGS)

# test: the whole suite against PostgreSQL and Redis (both must be running), with a fresh random
# SECRET_KEY (the settings refuse short and placeholder keys when DEBUG is off).
test: $(VENV)/.installed-dev
	DATABASE_URL="$(TEST_DATABASE_URL)" REDIS_URL="$(TEST_REDIS_URL)" \
	SECRET_KEY="$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" DEBUG=0 SERVER_ID=test-node \
	$(PY) -m pytest $(PYTEST_ARGS)

# lint: ruff's checks and its formatter's check on the Python code (pyproject.toml); .ci/run runs
# it before the tests. format: the fixes ruff can make by itself, then the formatter.
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# messages: after adding or changing a user-visible string (templates, Python, the page scripts):
# collect the msgids into locale/ko/LC_MESSAGES/django.po and djangojs.po (needs GNU gettext),
# then, once the Korean msgstr are written, run it again to compile the .mo files, which are
# committed (a fresh machine serves translated pages without gettext). tests/test_i18n.py fails
# on a msgid without Korean, a fuzzy entry or a stale .mo.
MESSAGES_IGNORE := --ignore=.venv --ignore=staticfiles --ignore=tests --ignore=bench --ignore=docker --ignore=var
messages: $(VENV)/.installed
	DEBUG=1 DATABASE_URL=sqlite:///:memory: $(PY) manage.py makemessages -l ko -d django --no-location --no-obsolete $(MESSAGES_IGNORE)
	DEBUG=1 DATABASE_URL=sqlite:///:memory: $(PY) manage.py makemessages -l ko -d djangojs --no-location --no-obsolete $(MESSAGES_IGNORE)
	DEBUG=1 DATABASE_URL=sqlite:///:memory: $(PY) manage.py compilemessages -l ko --ignore=.venv

clean:
	rm -rf $(VENV) staticfiles var db.sqlite3
