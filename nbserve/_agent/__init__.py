"""The agent: the one owner of nbserve state on a host (registry, serving processes, stable URLs)."""
