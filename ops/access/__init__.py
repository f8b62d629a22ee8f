"""Access control and the tamper-evident audit trail (docs/access.md).

Every command starts with :func:`authorize` (``require`` in the CLI), which
raises :class:`Denied` for a caller without a role that allows the operation.
"""

from ops.access.guard import DENIED_EXIT, authorize, outcome, require
from ops.access.rbac import ROLES, Actor, Denied

__all__ = ["DENIED_EXIT", "ROLES", "Actor", "Denied", "authorize", "outcome", "require"]
