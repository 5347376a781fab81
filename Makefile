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

# Debian packages the tests use: SoftHSM2 (PKCS#11 tests), Chromium and a CJK font (the
# verification page in a real browser; the font is also embedded in seal images and printed
# licences), poppler-utils (pdfsig/pdftoppm check sealed PDFs independently) and libnss3-tools
# (certutil: the NSS trust store pdfsig reads). Installed with root and apt; without them those tests
# skip locally and fail in CI, where CI=true forbids skipping them.
SYSTEM_PACKAGES := softhsm2 chromium fonts-noto-cjk poppler-utils libnss3-tools
system-deps:
	@missing=""; \
	ls /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so >/dev/null 2>&1 || missing="$$missing softhsm2"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	fc-list 2>/dev/null | grep -qi "noto sans cjk" || missing="$$missing fonts-noto-cjk"; \
	command -v pdfsig >/dev/null 2>&1 || missing="$$missing poppler-utils"; \
	command -v certutil >/dev/null 2>&1 || missing="$$missing libnss3-tools"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	  else echo "missing$$missing and no root/apt: the tests needing them will be skipped"; fi; \
	fi

run: venv
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
