# Two commands for a newcomer (README): `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MANAGE := $(BIN)/python manage.py
export MEEPO_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test setup install kernels css system-deps migrate demo lint

run: setup demo
	$(MANAGE) collectstatic --noinput -v0
	$(BIN)/gunicorn -c deploy/gunicorn.conf.py meepo.wsgi

# With MEEPO_TEST_DATABASE_URL set (.ci/run starts a local PostgreSQL), the database tests run a
# second time against PostgreSQL.
test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest
	@if [ -n "$$MEEPO_TEST_DATABASE_URL" ]; then \
		echo "--- again on PostgreSQL ---"; \
		DATABASE_URL="$$MEEPO_TEST_DATABASE_URL" $(BIN)/pytest -m "not slow and not browser" catalog pipeline search; \
	fi

setup: install kernels css migrate

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

# The text tower's small-batch kernel (pipeline/small_batch.py). Optional: without a compiler or
# the Python headers, text queries run oneDNN's kernel, about half as fast.
kernels: install
	@command -v g++ >/dev/null && command -v ninja >/dev/null && test -f "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("include"))')/Python.h" \
		|| (apt-get update -q && apt-get install -y -q g++ ninja-build $(notdir $(PYTHON))-dev) || true
	$(BIN)/python -m pipeline.small_batch

css: install
	@command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q nodejs npm)
	$(MANAGE) tailwind install
	$(MANAGE) tailwind build

# Headless Chromium for the browser tests (Debian's build; Playwright's own download is not used).
system-deps:
	@test -x /usr/bin/chromium || (apt-get update -q && apt-get install -y -q chromium)

migrate: install
	$(MANAGE) migrate --noinput -v0

demo: migrate
	$(MANAGE) import_catalog catalog/demo/catalogue.csv
	$(MANAGE) embed_catalog

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
