# consent-proxy: `make run` starts the proxy, `make test` runs the whole suite.
# Both set themselves up from a fresh clone with only Python >= 3.11 installed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck migrate clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "consent-proxy needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.data/proxy-secret:
	@mkdir -p .data && chmod 700 .data
	@$(BIN)/python -c 'import secrets; print(secrets.token_hex(32))' > $@
	@chmod 600 $@

run: $(STAMP) .data/proxy-secret
	PROXY_SECRET="$${PROXY_SECRET:-$$(cat .data/proxy-secret)}" $(BIN)/consent-proxy serve

migrate: $(STAMP)
	$(BIN)/consent-proxy migrate

lint: $(STAMP)
	$(BIN)/ruff check proxy tests
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
