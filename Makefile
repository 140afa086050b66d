# Two commands for a newcomer (README): `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MANAGE := $(BIN)/python manage.py
export MEEPO_DATA_DIR ?= $(CURDIR)/var

.PHONY: run test setup install kernels css system-deps migrate demo lint gpu-wheels

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

# Wheels (Python 3.12) of the packages a GPU machine with its own PyTorch lacks, at the versions
# installed here, for .ci/gpu-check there (it cannot download).
GPU_WHEELS := open.clip.torch|ftfy|wcwidth|faiss.cpu|django|asgiref|sqlparse|django.ninja|pydantic|pydantic.core|annotated.types|typing.inspection|dj.database.url|whitenoise|django.tailwind|pytest.django
gpu-wheels: install
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl \
		$$($(BIN)/pip freeze | grep -i -E '^($(GPU_WHEELS))==')
