"""The environments versions run in (``nbserve envs list|prune``): which versions each serves,
and the removal of those no version needs."""

from __future__ import annotations

from typing import Any

from .._envs import Environments, EnvSpec, own_mismatches
from .fleet import Fleet


class EnvironmentsService:
    def __init__(self, fleet: Fleet, environments: Environments) -> None:
        self.fleet = fleet
        self.environments = environments

    def _users(self) -> dict[str, list[dict[str, Any]]]:
        """Per environment key, the versions (of any status: each could be rolled back to) whose
        pins need it."""
        users: dict[str, list[dict[str, Any]]] = {}
        running = {(p.deployment, p.version): p for p in self.fleet.engine.processes.values()}
        for row in self.fleet.registry.list_deployments():
            for version in self.fleet.registry.list_versions(row.name):
                spec = EnvSpec.of_version(version.metadata)
                if spec is None or not own_mismatches(spec):
                    continue
                proc = running.get((row.name, version.number))
                users.setdefault(spec.key, []).append({
                    "deployment": row.name, "version": version.number, "status": version.status,
                    "running": proc is not None and proc.environment == spec.key})
        return users

    def list(self) -> list[dict[str, Any]]:
        users = self._users()
        return [{**env, "versions": users.get(env["environment"], [])} for env in self.environments.list()]

    def prune(self) -> dict[str, Any]:
        """Remove every environment no version needs; one a version needs is kept, and said."""
        users = self._users()
        removed, kept = [], []
        for env in self.environments.list():
            key = env["environment"]
            if users.get(key):
                kept.append({"environment": key, "versions": users[key]})
            else:
                self.environments.remove(key)
                removed.append({"environment": key, "bytes": env.get("bytes")})
        return {"removed": removed, "kept": kept}
