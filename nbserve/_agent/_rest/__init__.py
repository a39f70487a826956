"""The agent's REST API (FastAPI), one module per resource.

- ``app``: ``create_app``, which builds the app and includes the routers;
- ``models``: the typed request and response models (the OpenAPI document's schemas);
- ``deps``: the collaborators a handler is handed (the manager, tokens, uploads, the scheduler),
  read from ``app.state``; ``auth``: the caller and its permissions (``view``, ``deploy``, ...);
- ``error_handlers``: the one mapping of ``nbserve.errors`` to HTTP answers; ``body_limit``:
  the request-size limit; ``serialise``: service results as response models;
- one ``APIRouter`` per resource: ``agent`` (health, shutdown, the panel's state),
  ``deployments``, ``versions``, ``uploads``, ``events``, ``rollouts``, ``capacity``,
  ``quality``, ``monitoring``, ``access`` (tokens, audit) and ``schedules``.

Handlers are thin: they read the request, call the service whose job the route is
(``manager.deployments``, ``.rollouts``, ``.capacity``, ``.readings``, ``.routes``, ``.fleet``)
and answer its result as a model.
"""
