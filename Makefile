# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   - create .venv, then start the dashboard on the bundled demo
#   make test   - create .venv, install the test browser if missing, run every test
.PHONY: demo test setup browser lint bench screenshots typecheck

PY := .venv/bin/python

setup:
	@bash scripts/setup_venv.sh

browser:
	@bash scripts/ensure_browser.sh

demo: setup
	$(PY) -m dashboard.serve --server.address 127.0.0.1

test: setup browser
	$(PY) -m ruff check recovery_core dashboard tests benchmarks assets
	$(PY) -m mypy
	$(PY) -m pytest

# The type check (configured in pyproject.toml): zero errors in recovery_core/ and dashboard/.
typecheck: setup
	$(PY) -m mypy

bench: setup
	$(PY) benchmarks/run.py

# The README's screenshots, as the browser tests take them (`make test` writes its own
# to a temporary folder, so it leaves no tracked file changed).
screenshots: setup browser
	RECOVERY_SCREENSHOTS=$(CURDIR)/assets/screenshots $(PY) -m pytest -q tests/e2e/test_browser.py tests/e2e/test_trust.py
