"""What every command module shares: the common options, settings, errors and tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

DataDir = Annotated[
    str | None,
    typer.Option(
        "--data-dir", "-d",
        help="Data folder of the embedded stack (default: $SELFLEARN_DATA_DIR or ./.selflearn).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def load_settings(data_dir: str | None = None) -> Any:
    """Settings from the environment, with ``--data-dir`` taking precedence.

    >>> load_settings("/tmp/x").data_dir
    PosixPath('/tmp/x')
    """
    from projections.sealing import use_settings
    from schemas.settings import Settings

    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": Path(data_dir)})
    use_settings(settings)  # model snapshots are sealed with this data folder's key
    return settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` in red on stderr and exit with ``code``."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def resolve_or_fail(settings: Any) -> Any:
    """The server addresses of ``settings``; exits with the reason when a server is unknown."""
    from schemas.addresses import StackNotRunning, resolve

    try:
        return resolve(settings)
    except StackNotRunning as exc:
        fail(str(exc))


def archive_or_fail(addresses: Any) -> Any:
    """The event archive; exits with the reason when PostgreSQL does not answer."""
    from ops.usecases.common import open_archive
    from projections.archive import ArchiveUnavailable

    try:
        return open_archive(addresses)
    except ArchiveUnavailable as exc:
        fail(str(exc))


def print_table(title: str, columns: list[str], rows: list[list[Any]], caption: str = "") -> None:
    """A rich table on stdout; every cell printed with ``str``."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption or None)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    Console().print(table)
