# consent-proxy: `make run` starts the proxy, `make test` runs the whole suite, `make bench`
# runs the benchmark suite (bench/README.md).
# All three set themselves up from a fresh clone with only Python >= 3.11 installed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck migrate bench clean

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

.data/admin-token:
	@mkdir -p .data && chmod 700 .data
	@$(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))' > $@
	@chmod 600 $@

# The first console administrator is created when there is no console user yet; its one-time
# password is printed here, once.
run: $(STAMP) .data/proxy-secret .data/admin-token
	@echo "make run: PROXY_SECRET is in .data/proxy-secret, ADMIN_TOKEN in .data/admin-token"
	@$(BIN)/consent-proxy user add admin --role admin --if-none
	@echo "make run: the console is at http://$${PROXY_HOST:-127.0.0.1}:$${PROXY_PORT:-8080}/console/"
	PROXY_SECRET="$${PROXY_SECRET:-$$(cat .data/proxy-secret)}" \
	ADMIN_TOKEN="$${ADMIN_TOKEN:-$$(cat .data/admin-token)}" $(BIN)/consent-proxy serve

migrate: $(STAMP)
	$(BIN)/consent-proxy migrate

lint: $(STAMP)
	$(BIN)/ruff check proxy tests bench
	$(BIN)/hadolint Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# The full benchmark suite (about 12 minutes). Extra options: make bench BENCH_ARGS="--size tiny".
# wrk comes from Debian packages; without it (or without root to install it) the run falls back
# to the Python load generator and says so in its table. Item 6 (SIP post-dial delay) needs
# Debian's kamailio, SIPp and tcpdump; without them (or root) the table marks it skipped.
BENCH_ARGS ?=
SIP_PACKAGES := kamailio kamailio-extra-modules kamailio-json-modules kamailio-utils-modules \
	sip-tester tcpdump
bench: $(STAMP)
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || \
		{ echo "bench: installing the bench extra (matplotlib)"; \
		  $(BIN)/python -m pip install --quiet -e '.[bench]'; }
	@command -v wrk >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "bench: wrk not found; running apt-get update && apt-get install -y wrk"; \
			{ apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || \
				echo "bench: could not install wrk; the Python load generator stands in"; \
		else \
			echo "bench: wrk not found and not root to install it; the Python load generator stands in"; \
		fi; }
	@{ command -v kamailio && command -v sipp && command -v tcpdump; } >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "bench: kamailio, sipp or tcpdump not found; apt-get install $(SIP_PACKAGES)"; \
			{ apt-get update -qq && apt-get install -y -qq --no-install-recommends \
				$(SIP_PACKAGES) >/dev/null; } || \
				echo "bench: could not install them; the SIP benchmark is skipped"; \
		fi; }
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
