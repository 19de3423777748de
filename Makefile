# Two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing, install the project with its dev extras,
# install the system packages the screenshots need (Chromium, Latin and CJK fonts) and the
# PostgreSQL 15 server the tests start a throwaway cluster of,
# and axe-core from npm for the accessibility tests.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SAMPLE := 2024-02-22-china-russia-report
SYSTEM_PACKAGES := chromium fonts-liberation fonts-noto-cjk postgresql-15
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
AXE := tools/node_modules/axe-core/axe.min.js
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

.PHONY: setup system demo serve test bench chaos check lint clean

setup: $(STAMP) system $(AXE)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's Chromium (never a downloaded browser); Liberation Serif, metric-compatible with Times
# New Roman, so previews show a serif where Georgia and Times are absent; fonts for Chinese,
# Japanese and Korean.
system:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { \
	  $(SUDO) apt-get update -qq && $(APT_INSTALL) $(SYSTEM_PACKAGES); }

# axe-core, the version pinned in tools/package-lock.json, into tools/node_modules (a test tool,
# not part of the product). npm comes from Debian when the machine has none.
$(AXE): tools/package.json tools/package-lock.json
	@command -v npm >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && $(APT_INSTALL) npm; }
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	touch $@

# The demo signs unsubscribe links with a throwaway secret kept outside the repository.
DEMO_SECRET := $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/newsletter/demo-secret

demo: setup $(DEMO_SECRET)
	$(VENV)/bin/newsletter preview $(SAMPLE)
	@echo
	$(VENV)/bin/newsletter check $(SAMPLE) --offline
	@echo
	$(VENV)/bin/newsletter subscribers import subscribers/subscribers.csv
	@echo
	@# Schedule the sample a few seconds ahead, then run the scheduler until it has sent it.
	NEWSLETTER_SECRET_FILE=$(DEMO_SECRET) $(VENV)/bin/newsletter schedule $(SAMPLE) --offline \
	  --at "$$($(PYTHON) -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=5)).isoformat(timespec="seconds"))')"
	NEWSLETTER_SECRET_FILE=$(DEMO_SECRET) $(VENV)/bin/newsletter run --until-idle
	@echo
	$(VENV)/bin/newsletter logs
	@# The web side for a moment: one reader leaves through their message's List-Unsubscribe (one-click).
	NEWSLETTER_SECRET_FILE=$(DEMO_SECRET) $(PY) tools/demo_unsubscribe.py outbox
	@echo
	@echo "The email: build/$(SAMPLE)/email.html (desktop.png and mobile.png beside it)."
	@echo "What each subscriber received: the .eml files under outbox/ (newsletter logs SEND_ID lists them)."
	@echo "The web side (unsubscribe, signup, preferences, archive): make serve, then http://127.0.0.1:8025/"
	@echo "The staff console: newsletter users add NAME --role admin, then http://127.0.0.1:8025/staff/"

# The web side for a person to click around (Ctrl-C stops it).
serve: setup $(DEMO_SECRET)
	NEWSLETTER_SECRET_FILE=$(DEMO_SECRET) $(VENV)/bin/newsletter serve

$(DEMO_SECRET):
	mkdir -p $(dir $@)
	$(PYTHON) -c "import secrets; print(secrets.token_urlsafe(32))" > $@
	chmod 600 $@

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/bench_build.py
	$(PY) benchmarks/bench_links.py
	$(PY) benchmarks/bench_webhooks.py
	$(PY) benchmarks/bench_console.py
	$(PY) benchmarks/bench_startup.py

# Exactly-once under faults, in full: on a throwaway PostgreSQL, 3 send workers SIGKILLed at random and the
# database restarted once while they send 50,000 recipients through the emulator with faults on (tests/chaos.py;
# tests/test_chaos.py runs a reduced version inside make test).
chaos: setup
	$(PY) -m tests.chaos --provider sendgrid
	$(PY) -m tests.chaos --provider resend

# Style and types: ruff, then mypy over the package (which ships py.typed), the tests and benchmarks.
check: $(STAMP)
	$(VENV)/bin/ruff check pipeline tests benchmarks tools/*.py
	$(VENV)/bin/mypy pipeline tests benchmarks tools/*.py

lint: check

clean:
	rm -rf build outbox .pytest_cache
