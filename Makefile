# virtkit: `make run` sets everything up and boots a demo VM; `make test` runs the whole suite.
VENV    := .venv
PYTHON  ?= python3
VIRTKIT := $(VENV)/bin/virtkit

.PHONY: run test test-fast install deps venv libvirt lint unit integration bench clean

run: install libvirt
	scripts/demo.sh

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q -n 2 --dist loadscope --durations=30

# The inner loop: lint, types and the unit tests (pure logic and libvirt's test:// driver), no
# daemon and no guest; well under 2 minutes.
test-fast: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q tests/unit

install: deps venv
	@$(VENV)/bin/python -m compileall -q src  # bytecode up front: a faster CLI start

deps:
	scripts/install-deps.sh
	scripts/install-ui.sh

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

libvirt:
	scripts/start-libvirt.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -q tests/unit

integration: install
	$(VENV)/bin/pytest -q tests/integration

bench: install libvirt
	WITH_BENCH=1 scripts/install-deps.sh
	$(VENV)/bin/python bench/provision.py --runs 5

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
