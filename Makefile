# Two commands do everything on a fresh machine:
#   make run   set up, train --quick on the bundled demo data if needed, serve, make a real demo call
#   make test  set up and run the whole test suite (what CI runs)
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
ARTIFACTS ?= artifacts
HOST     ?= 127.0.0.1
PORT     ?= 50051
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup run demo train serve test proto proto-check bench clean chromium postgresql

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,ray]'
	touch $@

setup: $(BIN)/.installed

$(ARTIFACTS)/LATEST: | $(BIN)/.installed
	$(BIN)/python -m recsys.train --data data/ml-latest-small --out $(ARTIFACTS) --quick

train: $(BIN)/.installed
	$(BIN)/python -m recsys.train --data data/ml-latest-small --out $(ARTIFACTS) --quick

# Serve in the foreground after one real demo call; Ctrl-C stops it.
run: $(BIN)/.installed $(ARTIFACTS)/LATEST
	$(BIN)/python -m service.demo --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT) --keep-serving

# Same, but stop the server after the demo call.
demo: $(BIN)/.installed $(ARTIFACTS)/LATEST
	$(BIN)/python -m service.demo --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT)

serve: $(BIN)/.installed $(ARTIFACTS)/LATEST
	$(BIN)/python -m service --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT)

# The bias report's browser test (tests/audit/test_report_browser.py) renders the HTML in Debian's headless
# Chromium; installed here when missing (as root, as CI runs). If it cannot be installed the test says so
# (and fails under CI, where the CI variable is set).
chromium:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
		echo "warning: could not install chromium; tests/audit/test_report_browser.py will not run"

# The PostgreSQL audit-store tests (tests/postgres_server.py) start their own throw-away server with initdb and
# pg_ctl from /usr/lib/postgresql/*/bin: installed here when missing (as root, as CI runs). If it cannot be
# installed those tests say so (and fail under CI, where the CI variable is set).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { command -v apt-get >/dev/null && (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null); } || \
		echo "warning: could not install postgresql; the PostgreSQL audit-store tests will not run"

test: $(BIN)/.installed chromium postgresql
	$(BIN)/python scripts/gen_proto.py --check
	$(BIN)/python -m pytest

proto: $(BIN)/.installed
	$(BIN)/python scripts/gen_proto.py

bench: $(BIN)/.installed $(ARTIFACTS)/LATEST
	$(BIN)/python bench/rank_vs_echo.py --artifacts $(ARTIFACTS)

clean:
	rm -rf $(VENV) $(ARTIFACTS) reports *.egg-info
