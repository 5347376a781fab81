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

.PHONY: run test lint bench venv system-deps runtime-deps _apt-install demo clean

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
	$(VENV)/bin/ruff check schemas hsm signing vault verify_api tests benchmarks
	$(VENV)/bin/ruff format --check schemas hsm signing vault verify_api tests benchmarks
	$(VENV)/bin/mypy

bench: venv system-deps
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,ops,rounds --benchmark-sort=name --benchmark-warmup=on

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
