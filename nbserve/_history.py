"""A deployment's history as rows, one per version, from the agent's ``versions`` (their
metadata: model, provenance, description, card): what ``Deployment.history()`` shows as a
DataFrame and the panel's version list shows as JSON. One spelling of the columns for both."""

from __future__ import annotations

from typing import Any

__all__ = ["version_rows"]


def version_rows(versions: list[dict[str, Any]], live: int | None,
                 sources: dict[int, str | None] | None = None) -> list[dict[str, Any]]:
    """Plain JSON rows (``created_at`` as the agent wrote it). ``sources``: the address each
    version was registered from (the audit log's), as ``from``; left out when not given."""
    rows = []
    for v in versions:
        meta = v.get("metadata") or {}
        prov = meta.get("provenance") or {}
        card = meta.get("card") or {}
        row: dict[str, Any] = {
            "version": v["number"],
            "status": v["status"],
            "live": v["number"] == live,
            "created_at": v["created_at"],
            "created_by": v.get("created_by"),
        }
        if sources is not None:
            row["from"] = sources.get(v["number"])
        row.update({
            "model": (meta.get("model") or {}).get("class"),
            # what runs it: "onnx" (compiled, parity-checked) or "native"; older versions are native
            "runtime": ((meta.get("model") or {}).get("runtime") or {}).get("name", "native"),
            # where it runs (local, shared, ray); older agents said it in the metadata only
            "engine": v.get("engine") or meta.get("engine"),
            "notebook": prov.get("notebook"),
            "cell": prov.get("cell_execution_count"),
            "cell_sha256": (prov.get("cell_sha256") or "")[:12] or None,
            "description": meta.get("description"),
            "intended_use": card.get("intended_use"),
            "limitations": card.get("limitations"),
            "bento": v["bento_tag"],
            "python": prov.get("python"),
            "environment": v.get("environment"),  # where its server runs now: "agent", an env's key
            "error": v.get("error"),
        })
        rows.append(row)
    return rows
