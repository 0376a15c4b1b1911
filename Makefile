# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   - create .venv, then start the dashboard on the bundled demo
#   make test   - create .venv, install the test browser if missing, run every test
.PHONY: demo test setup browser lint bench

PY := .venv/bin/python

setup:
	@bash scripts/setup_venv.sh

browser:
	@bash scripts/ensure_browser.sh

demo: setup
	$(PY) -m streamlit run dashboard/app.py --server.address 127.0.0.1

test: setup browser
	$(PY) -m ruff check recovery_core dashboard tests benchmarks assets
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/run.py
