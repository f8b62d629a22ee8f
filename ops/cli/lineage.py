"""``selflearn lineage``: a decision's model, snapshot, registry run, training events and
promotions; or, for a model version, the decisions it served. Logic: ``ops.usecases.lineage``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from ops.access import require
from ops.cli.common import AsJson, DataDir, fail, load_settings, print_table


def lineage(
    decision_id: Annotated[str | None, typer.Argument(
        help="decision.made event id, or the request id")] = None,
    agent: Annotated[str | None, typer.Option(help="With --model-version: the agent.")] = None,
    model_version: Annotated[str | None, typer.Option(
        "--model-version", help="A model version (name:N) instead of a decision.")] = None,
    limit: Annotated[int, typer.Option(help="Decision ids listed as served.")] = 20,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Where a decision's model came from; or which decisions a model version served."""
    from ops.cli.common import archive_or_fail, resolve_or_fail
    from ops.usecases import lineage as use
    from ops.usecases.common import redis_client
    from projections.archive import ArchiveUnavailable
    from projections.policy_store import PolicyStore

    settings = load_settings(data_dir)
    require(settings, "lineage", decision_id or agent or "*")
    if (decision_id is None) == (model_version is None) or (model_version and not agent):
        fail("give either a DECISION_ID, or --agent and --model-version")
    addresses = resolve_or_fail(settings)
    archive = archive_or_fail(addresses)
    store = PolicyStore(redis_client(addresses.redis_url), settings.topic_prefix)
    try:
        if decision_id is not None:
            report = use.decision_lineage(archive, store, decision_id,
                                          mlflow_uri=addresses.mlflow_uri, limit=limit)
        else:
            assert agent is not None and model_version is not None
            report = {"model": use.version_lineage(
                archive, store, agent, model_version, use.agent_kind(archive, agent),
                mlflow_uri=addresses.mlflow_uri, limit=limit)}
    except (LookupError, ArchiveUnavailable) as exc:
        fail(str(exc))
    finally:
        archive.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        show(report)


def show(report: dict[str, Any]) -> None:
    """The lineage report as tables."""
    m = report["model"]
    if "decision" in report:
        d = report["decision"]
        print_table(f"decision {d['decision_id']}", ["field", "value"],
                    [[k, v] for k, v in d.items()])
    reg = m["registry"]
    rows = [["snapshot", json.dumps(m["snapshot"])],
            ["registry", f"{reg['model']} run {reg['run_id']} ({reg['run_name']})"
             if reg["found"] else f"not found: {reg['why']}"],
            ["created by", f"{m['created_by']['type']} {m['created_by']['event_id']} at "
             f"{m['created_by']['at']}" if m["created_by"] else "-"],
            ["learned up to", m["learned_from"]["bound"]]]
    print_table(f"model {m['agent_id']} {m['model_version']}", ["field", "value"], rows)
    print_table("events it learned from", ["type", "partition", "offsets", "events", "from",
                                           "to"],
                [[r["type"], r["partition"], f"{r['first_offset']}..{r['last_offset']}",
                  r["events"], r["first_at"], r["last_at"]]
                 for r in m["learned_from"]["ranges"]])
    print_table("promotion transitions", ["at", "what", "event", "archived at", "reason"],
                [[t["at"], t["role"], t["event_id"], t["source"],
                  t["payload"].get("reason", "")] for t in m["transitions"]])
    s = m["served"]
    print_table(f"decisions served by {m['model_version']}: {s['decisions']}",
                ["policy", "decisions", "first", "last"],
                [[p, v["decisions"], v["first_at"], v["last_at"]]
                 for p, v in s["by_policy"].items()],
                caption="first: " + ", ".join(x["decision_id"] for x in s["first"][:5]))
