"""Who the demo acts as, and its erasure as a privileged step: least privilege, audited.

The demo runs as an **operator identity** (docs/access.md, "The demo"): when
the caller (``SELFLEARN_IDENTITY``, ``<data_dir>/identity`` or the OS user) is
an operator, the demo runs as the caller; when the caller is an admin (the
data folder's owner, by default), the admin grants the operator role to
``demo-operator`` (an audited ``role.grant``) and the demo, its worker and its
vision agent run as that identity, so none of them holds admin rights.

The erasure half-way is an admin operation. The operator identity asks first
and is denied (the denial is an audit record, as for any command); then the
admin who started the demo — the data-protection officer here — erases the
subject. A demo started by a non-admin cannot erase: the report shows the
denial instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console

from ops.access import Denied, authorize, outcome
from ops.access.rbac import Actor, RoleStore, decide
from schemas.settings import Settings

DEMO_OPERATOR = "demo-operator"


@dataclass(frozen=True)
class DemoIdentity:
    """The settings the demo acts with (an operator), and the admin who may erase."""

    operator: Settings
    actor: Actor
    officer: Settings | None  # the admin caller; None when the caller is not an admin


def as_operator(settings: Settings) -> DemoIdentity:
    """The operator identity the demo runs as (granted by the admin caller when needed)."""
    caller, _ = decide(settings, "demo")
    if "admin" not in caller.roles:
        return DemoIdentity(settings, authorize(settings, "demo"), None)
    store = RoleStore(settings.data_dir)
    if (DEMO_OPERATOR, "operator") not in store.load():
        admin = authorize(settings, "role.grant", DEMO_OPERATOR, {"role": "operator"})
        store.grant(DEMO_OPERATOR, "operator")
        outcome(settings, admin, "role.grant", DEMO_OPERATOR, "applied", {"role": "operator"})
    operator = settings.model_copy(update={"identity": DEMO_OPERATOR})
    return DemoIdentity(operator, authorize(operator, "demo"), settings)


def erase_as_officer(who: DemoIdentity, subject: str, reason: str, out: dict[str, Any],
                     wait_s: float = 30.0) -> None:
    """The operator asks to erase (denied, audited); the admin caller erases (audited)."""
    from ops.usecases.privacy import erase

    tries = [who.operator] if who.officer is None else [who.operator, who.officer]
    for settings in tries:
        try:
            actor = authorize(settings, "erase", subject, {"reason": reason})
        except Denied as exc:
            out.setdefault("denied", []).append(exc.actor.name)
            continue
        try:
            result = erase(settings, subject, reason, wait_s=wait_s)
        except Exception as exc:  # the demo goes on; the report says what failed
            outcome(settings, actor, "erase", subject, "failed", {"error": str(exc)})
            out["error"] = f"{type(exc).__name__}: {exc}"
            return
        outcome(settings, actor, "erase", subject, "applied",
                {"event": result["event"], "key_versions": result["key_versions_destroyed"],
                 "forgot": result["forgot"]})
        out.update(result, by=actor.name)
        return
    out["error"] = f"erasure denied to {', '.join(out.get('denied', []))} (needs admin)"


def print_trail_paths(settings: Settings, who: DemoIdentity, console: Console) -> None:
    """Who the demo runs as, and where its audit log and signed checkpoint are."""
    from ops.access.trail import Trail

    trail = Trail.of(settings)
    roles = ", ".join(who.actor.roles) or "no role"
    console.print(f"running as [bold]{who.actor.name}[/] ({roles}; identity from "
                  f"{'the demo' if who.officer else who.actor.source})"
                  + (f"; erasures by the admin {decide(who.officer, 'erase')[0].name}"
                     if who.officer else ""))
    console.print(f"audit log: PostgreSQL table {trail.table} "
                  f"(`selflearn audit-log show`); signed checkpoint: {trail.checkpoints.latest}; "
                  f"verifier key: {trail.folder / 'checkpoint.vkey'}")
