# Quick start: `make test` (unit and testbed tests), `make rehearse` (the migration on a fresh testbed).
# Each target sets up what it needs: system packages, docker engine, virtualenv, images.
VENV := .venv
PYTHON ?= python3
SIZE_MB ?= 200
export INVOKE_SLONY_SSH_CONFIG := $(CURDIR)/docker/.testbed/ssh_config

.PHONY: setup venv lint test test-faults test-old unit rehearse down clean
setup:
	bash docker/setup-host.sh

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

unit: venv
	$(VENV)/bin/pytest -q tests/unit

# The formatter and the linter (configured in pyproject.toml): the tree is formatted, no finding.
lint: venv
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

test: setup venv lint
	$(VENV)/bin/pytest -ra tests/unit tests/testbed

# The old server's profile: db01 on Debian 11 / PostgreSQL 13, Slony 2.2.11 built there from the vendored
# source (../shared/vendor), then migrate, verify, switchover. A testbed of its own beside the others.
test-old: setup venv
	TESTBED_PROJECT=slonyold DB01_SSH_PORT=2241 DB02_SSH_PORT=2242 DB01_SUITE=bullseye \
		$(VENV)/bin/pytest -ra tests/oldserver

# Faults injected into a live replication (slon killed mid-copy, PostgreSQL restart, network cut,
# migrate killed in every step): about 10 minutes of its own, so apart from `make test`; CI runs both.
test-faults: setup venv
	$(VENV)/bin/pytest -ra tests/faults

rehearse: setup venv
	$(VENV)/bin/inv testbed.down
	$(VENV)/bin/inv testbed.up --size-mb $(SIZE_MB)
	$(VENV)/bin/inv testbed.rehearse

# The benchmark (not part of `make test`): its own testbed, then docs/benchmarks.md and docs/lag.png.
# Options: make bench BENCH_ARGS="--size-mb 200 --reps 1" (see .venv/bin/python bench/run.py --help);
# then the switchover's window over many moves (bench/window.py; WINDOW_ARGS="--moves 40").
.PHONY: bench bench-sizes
bench: setup venv
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)
	$(VENV)/bin/python bench/window.py $(WINDOW_ARGS)

down: venv
	$(VENV)/bin/inv testbed.down

clean: down
	rm -rf $(VENV) docker/.testbed

# The migration's cost as the database grows (0.2 and 1 GB; SIZES_ARGS=--big adds 5 GB).
bench-sizes: setup venv
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	$(VENV)/bin/python bench/sizes.py $(SIZES_ARGS)
