# renkei: `make run` starts the network in a box, `make test` runs the whole suite.
# Both set up what they need on a fresh machine (virtual environment, packages, and the
# Debian packages the tests use).

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
CONFIG ?= twistd.conf

.PHONY: run test lint bench bench-records bench-care-insurance system-packages clean

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

# The first console admin of Meguro is made once; its credentials stay in var/console-admin.txt
# (mode 600) and are printed at every start.
ADMIN_CREDENTIALS := var/console-admin.txt

run: $(BIN)/.installed
	$(BIN)/renkei pki init var/pki -c $(CONFIG)
	@if [ ! -s $(ADMIN_CREDENTIALS) ]; then \
	  umask 077; \
	  $(BIN)/renkei staff add admin -c $(CONFIG) --institution meguro --display-name 管理者 \
	    --roles "admin approver operator auditor" --password-file var/console-admin.password \
	    --if-absent > $(ADMIN_CREDENTIALS).new && mv $(ADMIN_CREDENTIALS).new $(ADMIN_CREDENTIALS); \
	fi
	@echo "---- operator console (first admin; see docs/operations.md) ----"
	@cat $(ADMIN_CREDENTIALS)
	@echo "----------------------------------------------------------------"
	$(BIN)/twistd -n --pidfile= renkei -c $(CONFIG)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed system-packages lint
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python bench/flows.py

bench-records: $(BIN)/.installed
	$(BIN)/python bench/records.py

bench-care-insurance: $(BIN)/.installed
	$(BIN)/python bench/care_insurance.py

clean:
	rm -rf var $(VENV)
