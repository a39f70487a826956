"""Access and governance: tokens, the audit log, remote targets, versions' environments (``from nbserve import admin``).

The implementation is ``nbserve._admin``; this module is its public face.
"""

from ._admin import (
    Target,
    add_target,
    audit,
    create_token,
    environments,
    list_targets,
    list_tokens,
    prune_environments,
    remove_target,
    revoke_token,
    rotate_token,
    verify_audit,
)

__all__ = ["Target", "add_target", "audit", "create_token", "environments", "list_targets", "list_tokens",
           "prune_environments", "remove_target", "revoke_token", "rotate_token", "verify_audit"]
