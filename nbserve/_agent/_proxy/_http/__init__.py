"""The client side of the proxy: HTTP/1.1 connections from clients (like uvicorn's
``protocols/http``).  ``_connection`` parses and answers, one request after another;
``_request`` is the state of one request; ``_flow`` decides when to read; ``_answers``
writes what the proxy answers itself."""
