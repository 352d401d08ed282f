# renkei: `make run` starts the network in a box, `make test` runs the whole suite.
# Both set up what they need on a fresh machine (virtual environment, packages, and the
# Debian packages the tests use).

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
CONFIG ?= twistd.conf

.PHONY: run consoles test lint bench bench-records bench-care-insurance bench-national system-packages clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

# Debian packages the tests use: a PostgreSQL server (the PostgreSQL tests start their own
# when none listens on 127.0.0.1:5432), openssl and xmlsec1 (interoperability checks),
# chromium (the console's browser tests drive it through Playwright) and fonts-noto-cjk (so
# that Japanese renders in its screenshots).
system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v xmlsec1 >/dev/null || missing="$$missing xmlsec1"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# Every institution with a console (console_listen) gets its first admin, also an approver,
# once: user admin, a generated password and a TOTP secret, shown then and kept in
# $(CREDENTIALS)/NAME.txt (mode 600) for the first login. Later starts say where to log in but
# print no password: one changed since (renkei staff reset-password, the console's 利用者 page)
# would be stale. docs/operations.md, "First set-up".
CREDENTIALS ?= var/consoles
CONSOLES = $(shell awk '/^\[/ {name = ""} /^\[institution:/ {name = $$0; sub(/^\[institution:/, "", name); \
  sub(/\].*/, "", name)} /^console_listen/ && name != "" {print name}' $(CONFIG))

consoles:
	@mkdir -p $(CREDENTIALS) && chmod 700 $(CREDENTIALS)
	@if [ -s var/console-admin.txt ] && [ ! -e $(CREDENTIALS)/meguro.txt ]; then \
	  mv var/console-admin.txt $(CREDENTIALS)/meguro.txt; \
	  mv var/console-admin.password $(CREDENTIALS)/meguro.password 2>/dev/null || true; \
	fi
	@for name in $(CONSOLES); do \
	  if [ ! -s $(CREDENTIALS)/$$name.txt ]; then \
	    (umask 077 && $(BIN)/renkei staff add admin -c $(CONFIG) --institution $$name \
	      --display-name 管理者 --roles "admin approver operator auditor" \
	      --password-file $(CREDENTIALS)/$$name.password --if-absent \
	      > $(CREDENTIALS)/$$name.txt.new) || exit 1; \
	    mv $(CREDENTIALS)/$$name.txt.new $(CREDENTIALS)/$$name.txt; \
	    echo "---- the first admin of $$name's console, shown once (kept in $(CREDENTIALS)/$$name.txt) ----"; \
	    cat $(CREDENTIALS)/$$name.txt; \
	  fi; \
	done
	@echo "---- operator consoles (docs/operations.md, \"First set-up\") ----"
	@for name in $(CONSOLES); do \
	  printf '%-10s %s  user admin\n' "$$name" "$$(sed -n 's/^console: *//p' $(CREDENTIALS)/$$name.txt)"; \
	done
	@echo "first passwords and TOTP secrets: $(CREDENTIALS)/NAME.txt (until changed); a new password:"
	@echo "  .venv/bin/renkei staff reset-password admin -i NAME --generate-password"
	@echo "----------------------------------------------------------------"

run: $(BIN)/.installed
	$(BIN)/renkei pki init var/pki -c $(CONFIG)
	@$(MAKE) --no-print-directory consoles
	$(BIN)/twistd -n --pidfile= renkei -c $(CONFIG)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed system-packages lint
	$(BIN)/pytest -q -n logical

bench: $(BIN)/.installed
	$(BIN)/python bench/flows.py

bench-records: $(BIN)/.installed
	$(BIN)/python bench/records.py

bench-care-insurance: $(BIN)/.installed
	$(BIN)/python bench/care_insurance.py

bench-national: $(BIN)/.installed
	$(BIN)/python bench/national.py

clean:
	rm -rf var $(VENV)
