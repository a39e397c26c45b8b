# ValueFlow Automations. Two commands do all set-up on a fresh machine: `make demo`, `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP_FLAGS ?= --disable-pip-version-check --quiet
# two workers (this machine has 2 cores); each starts its own Azurite
PYTEST_ARGS ?= -n 2

.PHONY: help install demo run test test-fast lint lint-infra browser bench doctor clean

help:
	@echo "make demo    - install, start Azurite + embedded warehouse, run the main jobs once, print a summary (SERVE=1 keeps serving)"
	@echo "make run     - start Azurite and the local Functions host on 127.0.0.1:\$${VALUEFLOW_PORT:-7071} (foreground)"
	@echo "make test    - lint + type check + the whole test suite (starts and stops its own services)"
	@echo "make bench   - benchmark scripts, figures side by side with their baselines"
	@echo "make doctor  - check settings and connectivity"
	@echo "make clean   - remove local state (.valueflow/)"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 is required (python3.11 or python3 on PATH)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-dev.txt
	@touch $@

node_modules/.installed: package.json
	@command -v npm >/dev/null || { echo "Node.js 20 and npm are required for Azurite"; exit 1; }
	npm install --no-audit --no-fund --loglevel=error
	@touch $@

install: $(VENV)/.installed node_modules/.installed

demo: install
	$(PY) -m devhost.demo $(if $(SERVE),--serve)

run: install
	$(PY) -m devhost.run

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy shared functions devhost function_app.py

# checkov lives in its own venv: it pulls a fork of python-hcl2 and older packaging that break the app's venv
CHECKOV_VENV := .valueflow/tools/checkov
$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install $(PIP_FLAGS) checkov==3.3.30

lint-infra: $(CHECKOV_VENV)/bin/checkov
	terraform fmt -check -recursive infra
	$(CHECKOV_VENV)/bin/checkov -d infra --framework terraform --quiet --compact --skip-download

# the review page's browser test drives the system Chromium (Debian package; browser downloads are not reachable)
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (Debian package) for the browser test"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }
	@command -v chromium >/dev/null || { echo "error: chromium could not be installed; the browser test needs it"; exit 1; }

test: lint lint-infra browser
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: install
	$(PY) -m bench

doctor: install
	$(PY) -m shared.cli doctor

clean:
	rm -rf .valueflow
