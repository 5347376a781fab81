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

.PHONY: run test lint audit fuzz soak bench load bench-report venv system-deps runtime-deps _apt-install demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Debian packages, installed with root and apt when missing.
# The service itself (`make run`): a CJK font (fonts-noto-cjk) for seal images and printed licences,
# and SoftHSM2 for a PKCS#11 token. The tests add Chromium (the verification page in a real
# browser), poppler-utils (pdfsig/pdftoppm/pdftotext check sealed PDFs independently) and
# libnss3-tools (certutil: the NSS trust store pdfsig reads). Without root the tests needing them
# skip locally and fail in CI, where CI=true forbids skipping them.
runtime-deps:
	@$(MAKE) --no-print-directory _apt-install CHECK=runtime

system-deps:
	@$(MAKE) --no-print-directory _apt-install CHECK=all

_apt-install:
	@missing=""; \
	ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so >/dev/null 2>&1 || missing="$$missing softhsm2"; \
	fc-list 2>/dev/null | grep -qi "noto serif cjk" || missing="$$missing fonts-noto-cjk"; \
	if [ "$(CHECK)" = all ]; then \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  command -v pdfsig >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	  command -v certutil >/dev/null 2>&1 || missing="$$missing libnss3-tools"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	  else echo "missing$$missing and no root/apt: install them (the tests needing them skip; sealing needs a CJK font)"; fi; \
	fi

run: venv runtime-deps
	$(VENV)/bin/yinxin init
	$(VENV)/bin/yinxin demo
	$(VENV)/bin/yinxin seed-demo
	@echo "serving on http://127.0.0.1:8000 (Ctrl-C stops): /docs, /healthz, /.well-known/jwks.json"
	$(VENV)/bin/yinxin serve --host 127.0.0.1 --port 8000

test: venv system-deps
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check schemas hsm signing vault verify_api tests benchmarks fuzz
	$(VENV)/bin/ruff format --check schemas hsm signing vault verify_api tests benchmarks fuzz
	$(VENV)/bin/mypy
	@$(MAKE) --no-print-directory audit

# Supply chain: pip-audit over the installed dependencies; a version with a known advisory fails
# (--strict: so does a dependency it could not look up). pip-audit asks PyPI's per-version JSON API
# (/pypi/NAME/VERSION/json) for advisories; where that API cannot be reached (a local mirror or a
# closed network) the audit cannot check anything, so it says so loudly instead of passing silently.
PIP_AUDIT_PROBE ?= https://pypi.org/pypi/pip/24.0/json
audit: venv
	@if $(PY) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" "$(PIP_AUDIT_PROBE)" 2>/dev/null; then \
	  $(PY) -m pip install --quiet pip-audit && \
	  $(VENV)/bin/pip-audit --strict --skip-editable --progress-spinner off --desc; \
	else \
	  echo "pip-audit NOT RUN: the advisory service ($(PIP_AUDIT_PROBE)) is unreachable from this machine;"; \
	  echo "  no dependency was checked for known vulnerabilities. Run 'make audit' where PyPI's JSON API answers."; \
	  if [ "$(AUDIT_REQUIRED)" = 1 ]; then exit 1; fi; \
	fi

# Longer hardening runs (the short ones are part of `make test`): schemathesis with 1 000 examples per
# operation and each atheris harness for FUZZ_SECONDS (10 minutes by default).
FUZZ_SECONDS ?= 600
fuzz: venv system-deps
	YINXIN_FUZZ_EXAMPLES=1000 $(PY) -m pytest -q tests/security/test_schemathesis.py
	$(PY) fuzz/run.py --seconds $(FUZZ_SECONDS)

# Crash consistency: SOAK_ROUNDS kill -9 rounds of issue-bulk on SQLite and on PostgreSQL (CI runs 20).
SOAK_ROUNDS ?= 200
soak: venv system-deps
	YINXIN_CRASH_ROUNDS=$(SOAK_ROUNDS) $(PY) -m pytest -q tests/faults/test_crash.py

bench: venv system-deps
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,ops,rounds --benchmark-sort=name --benchmark-warmup=on --benchmark-json=benchmarks/results/bench.json

# Load test against a `yinxin serve` the script starts on loopback (wrk from Debian, installed with
# root; without it an httpx client that is itself the bottleneck). LOAD_ARGS="--db sqlite" etc.
LOAD_ARGS ?=
load: venv system-deps
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } || echo "wrk missing: falling back to httpx (generator-bound)"
	$(PY) -m benchmarks.load.run $(LOAD_ARGS)

# The table in benchmarks/README.md and benchmarks/report.png, from the newest bench and load results.
bench-report: venv
	$(PY) -m benchmarks.report

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
