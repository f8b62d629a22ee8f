"""Small helpers shared by the operator commands (addresses, Redis, tables)."""

from __future__ import annotations

from typing import Any

from ops.cli import fail


def resolve_or_fail(settings: Any) -> Any:
    from schemas.settings import StackNotRunning, resolve

    try:
        return resolve(settings)
    except StackNotRunning as exc:
        fail(str(exc))


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)


def print_table(title: str, columns: list[str], rows: list[list[Any]], caption: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption or None)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console().print(table)


def policy_summary(pol: Any) -> dict[str, Any] | None:
    if pol is None:
        return None
    return {"mode": pol.mode, "canary_percent": pol.canary_percent,
            "champion": f"{pol.champion.name}:{pol.champion.version}",
            "challenger": (f"{pol.challenger.name}:{pol.challenger.version}"
                           if pol.challenger else None), "revision": pol.revision}
