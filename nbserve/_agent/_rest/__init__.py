"""The agent's REST API (FastAPI), by resource: ``models`` holds the typed request and response
models every route uses."""
