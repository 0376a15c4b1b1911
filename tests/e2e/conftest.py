"""One `streamlit run` server with the default settings, shared by every browser test
module that needs no settings of its own: each server costs a start and a first page
that imports torch and builds the demo. A module that needs other settings (upload
limit, session expiry, no automatic scoring) starts its own with `server_fixture`."""

from __future__ import annotations

from tests.e2e.harness import server_fixture

server = server_fixture(scope="session")
