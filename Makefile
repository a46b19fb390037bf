# The two commands of README.rst: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?= --endpoint tcp:8888

.PHONY: install run test clean vendor screenshots

$(BIN)/twistd: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# Enterprise Gateway's black-box itests (tests/test_jupyter_gateway.py) only:
	# without its dependencies (Docker, Kubernetes, YARN clients), which they do not use.
	$(BIN)/python -m pip install -q --no-deps 'jupyter_enterprise_gateway==3.3.0'
	touch $@

install: $(BIN)/twistd

# Runs the runtime in the foreground on its embedded defaults: state in
# SPIN_HOME (default /opt/spin, else ~/.spin when that is not writable) and a
# generated SPIN_TOKEN, printed once, when none is set. Prints the browser
# UI's URL; with a generated token the URL carries it in its fragment
# (#token=..., which browsers never send to a server). The daemon itself
# never prints or logs a token.
run: install
	@SPIN_HOME="$${SPIN_HOME:-/opt/spin}"; \
	if ! mkdir -p "$$SPIN_HOME" 2>/dev/null || [ ! -w "$$SPIN_HOME" ]; then \
		SPIN_HOME="$$HOME/.spin"; echo "/opt/spin is not writable: using SPIN_HOME=$$SPIN_HOME"; fi; \
	export SPIN_HOME; \
	URL="$$($(BIN)/python -c "$$UI_URL" '$(ARGS)')"; \
	if [ -z "$${SPIN_TOKEN:-}" ]; then \
		SPIN_TOKEN="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(32))')"; \
		echo "SPIN_TOKEN=$$SPIN_TOKEN  (generated; export SPIN_TOKEN to choose your own)"; \
		echo "Open the UI: $$URL#token=$$SPIN_TOKEN"; \
	else echo "Open the UI: $$URL  (it asks for your SPIN_TOKEN)"; fi; \
	export SPIN_TOKEN; \
	exec $(BIN)/twistd -n --pidfile= spin-runtime $(ARGS)

# The UI's URL from the first tcp:/ssl: endpoint in ARGS (default port 8888).
define UI_URL
import re, sys
found = re.search(r"--endpoint[= ]+(tcp|ssl):(?:port=)?([0-9]+)", sys.argv[1])
scheme, port = found.groups() if found else ("tcp", "8888")
print(("https" if scheme == "ssl" else "http") + "://localhost:" + port + "/")
endef
export UI_URL

test: install
	$(BIN)/python -m twisted.trial --reactor=asyncio tests

# Screenshots of the browser UI for README.rst (docs/screenshots/*.png, light
# and dark): a runtime with a sample runbook, driven with /usr/bin/chromium.
# Not part of CI; run it when the UI changes and commit the PNGs.
screenshots: install
	$(BIN)/python tools/screenshots.py

# Maintainers only: rebuild the browser UI's vendored libraries from the npm
# registry (needs node and npm; see docs/browser-ui.rst). Users and CI never do.
vendor:
	tools/vendor/build.sh

clean:
	rm -rf $(VENV) _trial_temp build *.egg-info
