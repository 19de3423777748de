# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing, install the project with its dev extras, and
# install the system packages the screenshots need (Chromium, CJK fonts).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SAMPLE := 2024-02-22-china-russia-report
SYSTEM_PACKAGES := chromium fonts-noto-cjk
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system demo test bench lint clean

setup: $(STAMP) system

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium (never a downloaded browser) and fonts for Chinese, Japanese and Korean.
system:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

demo: setup
	$(VENV)/bin/newsletter preview $(SAMPLE)
	@echo
	$(VENV)/bin/newsletter check $(SAMPLE) --offline
	@echo
	@echo "Open build/$(SAMPLE)/email.html in a browser, or look at desktop.png and mobile.png beside it."

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_links.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline tests benchmarks

clean:
	rm -rf build outbox .pytest_cache
