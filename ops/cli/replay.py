"""``selflearn replay``: read events back in event-time order; rebuild the features."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from ops.access import require
from ops.cli.common import AsJson, DataDir, fail, load_settings, print_table, resolve_or_fail


def parse_time(text: str | None) -> datetime | None:
    """An ISO time option; naive times are UTC.

    >>> parse_time("2025-01-31T12:00:00")
    datetime.datetime(2025, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)
    """
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"not an ISO time: {text!r} (e.g. 2025-01-31T12:00:00Z)")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def replay(
    since: Annotated[str | None, typer.Option(help="From this event time (ISO).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this event time (ISO).")] = None,
    agent: Annotated[str | None, typer.Option(help="Only this producer's events.")] = None,
    types: Annotated[list[str] | None, typer.Option("--type", help="Event type (repeat).")]
    = None,
    source: Annotated[str, typer.Option(help="archive | broker")] = "archive",
    into: Annotated[str | None, typer.Option(help="Rebuild a projection: features")] = None,
    prefix: Annotated[str | None, typer.Option(
        help="Redis prefix of the rebuilt projection (default <prefix>-replay-<time>).")]
    = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Read events back in event-time order; optionally rebuild the features and compare."""
    from ops.usecases import replay as use
    from projections.archive import ArchiveUnavailable

    if source not in use.SOURCES:
        fail(f"--source must be archive or broker, not {source!r}")
    if into not in (None, "features"):
        fail(f"--into supports only 'features', not {into!r}")
    settings = load_settings(data_dir)
    require(settings, "replay", agent or "*", {"into": into, "source": source})
    addresses = resolve_or_fail(settings)
    lo, hi = parse_time(since), parse_time(until)
    try:
        report = use.replay(settings, addresses, source=source, since=lo, until=hi,
                            agent=agent, types=types, into=into, prefix=prefix)
    except (ArchiveUnavailable, use.RebuildRefused) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print(report, source, settings.topic_prefix, rebuilt=into == "features")


def _print(report: dict[str, Any], source: str, live_prefix: str, rebuilt: bool) -> None:
    print_table(f"replay from {source}: {report['events']} events in {report['seconds']} s",
                ["type", "events"], [[k, v] for k, v in report["by_type"].items()])
    if rebuilt:
        title = f"features rebuilt under {report['prefix']!r} vs live {live_prefix!r}"
        print_table(title,
                    ["replayed entities", "equal", "different", "not live",
                     "live, not replayed"],
                    [[report["entities"], report["equal"], len(report["different"]),
                      len(report["only_replay"]), len(report["only_live"])]],
                    caption="equal: every feature value within 1e-9 relative (sums in another "
                            "order); a filtered replay is compared on its own entities only")
        for ent in report["different"][:20]:
            typer.echo(f"different: {ent['entity']}: replay {ent['replay']} live {ent['live']}")
