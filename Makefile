# renkei: `make run` starts the network in a box, `make test` runs the whole suite.
# Both set up what they need on a fresh machine (virtual environment, packages, and the
# Debian packages the tests use).

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3
CONFIG ?= twistd.conf

.PHONY: run test lint bench system-packages clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

# Debian packages the tests use: a PostgreSQL server (the PostgreSQL tests start their own
# when none listens on 127.0.0.1:5432), openssl and xmlsec1 (interoperability checks).
system-packages:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v xmlsec1 >/dev/null || missing="$$missing xmlsec1"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

run: $(BIN)/.installed
	$(BIN)/renkei pki init var/pki -c $(CONFIG)
	$(BIN)/twistd -n --pidfile= renkei -c $(CONFIG)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(BIN)/.installed system-packages lint
	$(BIN)/pytest -q

bench: $(BIN)/.installed
	$(BIN)/python bench/flows.py

clean:
	rm -rf var $(VENV)
