"""Access and governance: tokens, the audit log, remote targets (``from nbserve import admin``).

The implementation is ``nbserve._admin``; this module is its public face.
"""

from ._admin import (
    Target,
    add_target,
    audit,
    create_token,
    list_targets,
    list_tokens,
    remove_target,
    revoke_token,
    rotate_token,
    verify_audit,
)

__all__ = ["Target", "add_target", "audit", "create_token", "list_targets", "list_tokens", "remove_target",
           "revoke_token", "rotate_token", "verify_audit"]
