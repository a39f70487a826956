"""The agent's services, one job each, wired together by ``_agent/_manager.py``.

- ``settings``: a deployment's settings, their defaults and their one validation.
- ``fleet``: what the services share: registry reads, each deployment's runtime state,
  its stable endpoint, and starting, switching and retiring versions on the engine.
- ``checks``: what a new version must pass before traffic (parity, the batching check).
- ``rollouts``: canaries and shadows, their gates, promote and abort.
- ``deployments``: deploy, roll back, stop, start, revert, and restore after a restart.
- ``capacity``: workers and caps, scale to zero and waking, the host's memory budget.
- ``routes``: what a stable URL answers itself (per-version URLs, /metadata, /schema,
  /feedback) and aliases.
- ``readings``: latency, summaries, traffic, drift and quality, read from the monitor.

Each service holds the ``Fleet`` and the services it calls; none builds its own
collaborators, so each can be built with fakes.
"""
