# Yinxin — two commands: `make run` and `make test`. Both build what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export YINXIN_HOME ?= $(CURDIR)/var
# `make run` is the embedded development default: software keystore with its development passphrase
# (it warns). Production sets YINXIN_ENVIRONMENT=production and a real passphrase or an HSM.
run: export YINXIN_ENVIRONMENT ?= development

.PHONY: run test lint bench venv system-deps demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# SoftHSM2 for the PKCS#11 tests: installed with root and apt, otherwise those tests
# skip locally (and fail in CI, where CI=true forbids skipping them).
system-deps:
	@if ! ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing softhsm2 (apt)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2) >/dev/null; \
	  else echo "softhsm2 not installed and no root/apt: PKCS#11 tests will be skipped"; fi; \
	fi

run: venv
	$(VENV)/bin/yinxin init
	$(VENV)/bin/yinxin demo

test: venv system-deps
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check schemas hsm signing vault verify_api tests benchmarks
	$(VENV)/bin/ruff format --check schemas hsm signing vault verify_api tests benchmarks
	$(VENV)/bin/mypy

bench: venv system-deps
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,ops,rounds --benchmark-sort=name --benchmark-warmup=on

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
