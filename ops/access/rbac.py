"""Role-based access control: who the caller is, which roles they hold, what they may do.

The rules are a pycasbin model and policy shipped in this folder
(``model.conf``, ``policy.csv``): roles, the operations each may run, and role
inheritance. Who holds which role is data of the installation, kept in
``<data_dir>/access/roles.csv`` (``g, alice, operator`` lines) so it survives
restarts and needs no server: ``selflearn up`` and ``status`` are checked too,
before PostgreSQL runs. Until the file exists, the OS account that owns the data
folder (whoever created it, normally with ``selflearn up``) is the admin; the
file is seeded with that assignment the first time roles are loaded.

Every command calls :func:`authorize` first. A denied call raises
:class:`Denied` (naming the roles that would do) and leaves an audit record;
an allowed call of a privileged operation (anything a viewer may not run)
leaves one too (``ops.access.trail``).

>>> needed_roles("promote")
['operator', 'admin']
>>> sorted(role_operations()["viewer"])
['fleet', 'report', 'status']
"""

from __future__ import annotations

import csv
import fcntl
import getpass
import os
import pwd
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import casbin

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model.conf"
POLICY = HERE / "policy.csv"
ROLES = ("viewer", "operator", "auditor", "admin")  # least to most privileged
ROLES_FILE = "access/roles.csv"
IDENTITY_FILE = "identity"
ANY = "*"
# Names end up in a CSV file and in casbin rules: no commas, quotes or spaces.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$")


class Denied(PermissionError):
    """The caller may not run an operation; ``needs`` are the roles that would allow it."""

    def __init__(self, actor: Actor, operation: str, target: str, needs: list[str]) -> None:
        self.actor, self.operation, self.target, self.needs = actor, operation, target, needs
        on = "" if target == ANY else f" on {target}"
        held = ", ".join(actor.roles) or "no role"
        need = needs[0] if needs else "(no role allows it)"
        super().__init__(
            f"access denied: {actor.name} ({actor.source}) may not run {operation}{on}: "
            f"it needs the {need} role (any of: {', '.join(needs) or 'none'}); "
            f"{actor.name} has {held}. An admin can grant it: "
            f"selflearn role grant {actor.name} {need}")


@dataclass(frozen=True)
class Actor:
    """The authenticated caller as recorded: name, where the name came from, roles."""

    name: str
    source: str  # "SELFLEARN_IDENTITY", "identity file <path>" or "OS user"
    os_user: str
    roles: tuple[str, ...] = field(default=())

    def as_detail(self) -> dict[str, Any]:
        return {"identity_source": self.source, "os_user": self.os_user,
                "roles": list(self.roles)}


def check_name(name: str, what: str = "identity") -> str:
    """``name`` if it is a safe identity or role name, else ValueError.

    >>> check_name("alice@example.org")
    'alice@example.org'
    """
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r} must match {_NAME.pattern}")
    return name


def os_user() -> str:
    """The OS account running this process (``uid:N`` when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def identify(settings: Any) -> tuple[str, str]:
    """``(name, source)`` of the caller: setting, then identity file, then OS user."""
    if settings.identity:
        return check_name(settings.identity.strip()), "SELFLEARN_IDENTITY"
    path = Path(settings.data_dir) / IDENTITY_FILE
    try:
        lines = path.read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        lines = []
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            return check_name(line.strip()), f"identity file {path}"
    return check_name(os_user(), "OS user name"), "OS user"


def _owner(data_dir: Path) -> str:
    """The OS account owning the data folder (the current user if it does not exist yet)."""
    try:
        return pwd.getpwuid(data_dir.stat().st_uid).pw_name
    except (FileNotFoundError, KeyError):
        return os_user()


class RoleStore:
    """Role assignments of one installation in ``<data_dir>/access/roles.csv``.

    >>> import tempfile
    >>> store = RoleStore(tempfile.mkdtemp())
    >>> store.grant("alice", "operator")
    True
    >>> sorted(store.load()) == sorted([(os_user(), "admin"), ("alice", "operator")])
    True
    """

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / ROLES_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / ".roles.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self) -> list[tuple[str, str]] | None:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        out = []
        for row in csv.reader(line for line in text.splitlines()
                              if line.strip() and not line.startswith("#")):
            kind, user, role = (c.strip() for c in row)
            if kind == "g":
                out.append((user, role))
        return out

    def load(self) -> list[tuple[str, str]]:
        """Every ``(user, role)``; seeds the file with the data folder's owner as admin."""
        found = self._read()
        if found is not None:
            return found
        seed = [(_owner(self.data_dir), "admin")]
        if self.data_dir.is_dir():  # before `selflearn up` there is nothing to seed yet
            with self._locked():
                if self._read() is None:
                    self._write(seed)
        return self._read() or seed

    def _write(self, pairs: list[tuple[str, str]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        lines = ["# user, role (selflearn role grant/revoke; see docs/access.md)"]
        lines += [f"g, {u}, {r}" for u, r in sorted(set(pairs))]
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)

    def grant(self, user: str, role: str) -> bool:
        """Give ``user`` the ``role``; False when they already had it."""
        check_name(user, "user")
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        pairs = self.load()
        with self._locked():
            pairs = self._read() or pairs
            if (user, role) in pairs:
                return False
            self._write([*pairs, (user, role)])
        return True

    def revoke(self, user: str, role: str) -> bool:
        """Take ``role`` from ``user``; False when they did not have it.

        Raises ValueError rather than remove the last admin (nobody could grant again).
        """
        pairs = self.load()
        with self._locked():
            pairs = self._read() or pairs
            if (user, role) not in pairs:
                return False
            rest = [p for p in pairs if p != (user, role)]
            if role == "admin" and not any(r == "admin" for _, r in rest):
                raise ValueError(f"{user} is the last admin; grant admin to someone else first")
            self._write(rest)
        return True


def enforcer(assignments: list[tuple[str, str]]) -> casbin.Enforcer:
    """The shipped model and policy plus this installation's role assignments."""
    import casbin  # here, not at import: every command imports this module

    e = casbin.Enforcer(str(MODEL), str(POLICY))
    if assignments:
        e.add_grouping_policies([[u, r] for u, r in assignments])
    return e


@cache
def _policy() -> casbin.Enforcer:
    return enforcer([])


def operations() -> set[str]:
    """Every operation named in the policy."""
    return {rule[2] for rule in _policy().get_policy()}


def needed_roles(operation: str, target: str = ANY) -> list[str]:
    """The roles allowed to run ``operation`` (least privileged first)."""
    e = _policy()
    return [r for r in ROLES if e.enforce(r, target, operation)]


@cache
def role_operations() -> Mapping[str, frozenset[str]]:
    """Every operation each role may run (inherited ones included)."""
    return {r: frozenset(op for op in operations() if r in needed_roles(op)) for r in ROLES}


def privileged(operation: str) -> bool:
    """True unless a viewer may run it: privileged operations are always audited."""
    return "viewer" not in needed_roles(operation)


def decide(settings: Any, operation: str, target: str = ANY) -> tuple[Actor, bool]:
    """The caller and whether they may run ``operation`` on ``target`` (no audit)."""
    name, source = identify(settings)
    assignments = RoleStore(settings.data_dir).load()
    e = enforcer(assignments)
    roles = tuple(sorted(e.get_roles_for_user(name), key=_rank))
    actor = Actor(name, source, os_user(), roles)
    return actor, bool(e.enforce(name, target, operation))


def _rank(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)
