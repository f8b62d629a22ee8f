"""``selflearn audit``: recompute a decision (or a sample) from the archive, bit for bit."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ops.access import require
from ops.cli.common import (
    AsJson,
    DataDir,
    archive_or_fail,
    fail,
    load_settings,
    print_table,
    resolve_or_fail,
)


def audit(
    decision_id: Annotated[str | None, typer.Argument(
        help="decision.made event id, or the request id")] = None,
    sample: Annotated[int | None, typer.Option(help="Audit N random decisions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    agent: Annotated[str | None, typer.Option(help="With --sample: only this agent.")] = None,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Recompute a decision (or a sample) from the archive and its model snapshot.

    Exits with code 1 when any audited decision does not match.
    """
    from ops.usecases.audit import audit_decision, audit_sample, summary_row
    from ops.usecases.common import redis_client
    from schemas.cipher import FieldCipher
    from schemas.protect import key_store

    if (decision_id is None) == (sample is None):
        fail("give either a DECISION_ID or --sample N")
    settings = load_settings(data_dir)
    require(settings, "audit", decision_id or agent or "*")
    addresses = resolve_or_fail(settings)
    archive, r = archive_or_fail(addresses), redis_client(addresses.redis_url)
    cipher = FieldCipher(key_store(settings))  # requests' personal text, to recompute
    if sample is not None:
        report = audit_sample(archive, r, sample, seed, agent=agent,
                              mlflow_uri=addresses.mlflow_uri, prefix=settings.topic_prefix,
                              cipher=cipher)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            print_table(f"audit of {report['checked']} decisions", ["model version", "decisions"],
                        [[k, v] for k, v in report["by_version"].items()],
                        caption=f"snapshots from {report['by_source']}")
            typer.echo(f"match rate {report['match_rate']:.4f} "
                       f"({report['matched']}/{report['checked']})")
            if report["erased"]:
                typer.echo(f"{report['erased']} decisions have erased inputs (subject erased; "
                           "not recomputable, not a mismatch)")
            for m in report["mismatches"][:20]:
                typer.echo(f"MISMATCH {m['decision_id']} ({m['model_version']}): {m['reason']}")
        if report["matched"] + report["erased"] != report["checked"]:
            raise typer.Exit(1)
        return
    assert decision_id is not None
    try:
        result = audit_decision(archive, r, decision_id, mlflow_uri=addresses.mlflow_uri,
                                prefix=settings.topic_prefix, cipher=cipher)
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        rows = [[k, v] for k, v in summary_row(result).items()]
        rows += [["reason", result.reason or "-"]]
        rows += [[f"lineage.{k}", json.dumps(v, default=str) if isinstance(v, dict) else v]
                 for k, v in result.lineage.items()]
        print_table(f"audit of decision {result.decision_id} ({result.agent_id})",
                    ["field", "value"], rows)
    if not result.match and not result.inputs_erased:
        raise typer.Exit(1)
