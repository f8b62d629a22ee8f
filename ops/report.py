"""The HTML report: per-agent live vs shadow metrics, canary history, latency, vision, DLQ.

:func:`build_report` is a pure function of events, live policies and
dead-letter counts; it returns one self-contained HTML page (charts are
embedded PNGs, no scripts, nothing fetched from the network). The loaders read
those inputs from the archive (or the broker), Redis and the dead-letter
topic; :func:`serve` keeps a regenerated copy on a small local web server.

>>> from datetime import UTC, datetime
>>> from schemas import new_event
>>> ev = new_event("decision.made", {"request_id": "r", "kind": "task_estimate",
...     "output": 3.0, "model_version": "m:v1", "policy": "champion",
...     "inputs_digest": "d", "features": {}, "latency_us": 42.0},
...     producer="task-estimator", occurred_at=datetime(2025, 1, 1, tzinfo=UTC))
>>> page = build_report([ev], {}, {"malformed": 2})
>>> "task-estimator" in page and "<img" in page
True
"""

from __future__ import annotations

import html
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from schemas import Envelope
from schemas.policy import LivePolicy

log = logging.getLogger(__name__)

REPORT_TYPES = ("decision.made", "model.evaluated", "promotion.step_changed",
                "promotion.rolled_back", "frame.processed")
POLICY_LABELS = ("champion", "canary", "fallback", "baseline")
LATENCY_TARGET_US = 100_000.0  # decision P95 under 100 ms: the seed's target (README, Benchmarks)
FPS_TARGET = 30.0
HISTORY_ROWS = 50
_MAIN_METRIC = {"task_estimate": "mae", "review_risk": "log_loss"}

Point = tuple[datetime, float]


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated ``q``-th percentile (0-100) of ``values``; NaN when empty.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([5.0], 99)
    (2.5, 5.0)
    """
    if not values:
        return float("nan")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class AgentData:
    """Everything the report shows about one agent, gathered in one pass over the events."""

    agent_id: str
    kind: str = ""
    metrics: dict[str, list[Point]] = field(default_factory=lambda: defaultdict(list))
    metric_name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    latency: dict[str, list[Point]] = field(default_factory=lambda: defaultdict(list))

    @property
    def decisions(self) -> int:
        return sum(len(v) for v in self.latency.values())


@dataclass
class Collected:
    """The events of a report, folded into per-agent and per-camera series."""

    agents: dict[str, AgentData] = field(default_factory=dict)
    cameras: dict[str, list[tuple[datetime, float, float, int]]] = field(
        default_factory=lambda: defaultdict(list))
    events: int = 0
    first: datetime | None = None
    last: datetime | None = None

    def agent(self, agent_id: str) -> AgentData:
        if agent_id not in self.agents:
            self.agents[agent_id] = AgentData(agent_id)
        return self.agents[agent_id]


def _metric_value(kind: str, metrics: Mapping[str, Any]) -> tuple[str, float] | None:
    names = [_MAIN_METRIC[kind]] if kind in _MAIN_METRIC else list(_MAIN_METRIC.values())
    for base in names:
        for name in (f"rolling_{base}", base):
            if isinstance(metrics.get(name), int | float):
                return name, float(metrics[name])
    return None


def collect(events: Iterable[Envelope]) -> Collected:
    """Fold report-relevant events (any order) into series; other types are counted only."""
    c = Collected()
    for ev in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        c.events += 1
        c.first = c.first or ev.occurred_at
        c.last = ev.occurred_at
        p, t = ev.payload, ev.occurred_at
        if ev.type == "decision.made":
            a = c.agent(ev.producer)
            a.kind = a.kind or str(p["kind"])
            if isinstance(p.get("latency_us"), int | float):
                a.latency[str(p["policy"])].append((t, float(p["latency_us"])))
        elif ev.type == "model.evaluated" and p["kind"] != "operator":
            a = c.agent(ev.producer)
            a.kind = a.kind or str(p["kind"])
            hit = _metric_value(a.kind, p["metrics"])
            if hit is not None:
                a.metric_name = a.metric_name or hit[0]
                a.metrics[str(p["model"])].append((t, hit[1]))
        elif ev.type in ("promotion.step_changed", "promotion.rolled_back"):
            a = c.agent(str(p["agent_id"]))
            a.kind = a.kind or str(p["kind"])
            rolled = ev.type == "promotion.rolled_back"
            a.history.append({
                "at": t, "event": "rollback" if rolled else "step",
                "from": int(p["from_step"]), "to": 0 if rolled else int(p["to_step"]),
                "champion": p["champion"], "challenger": p["challenger"],
                "reason": p["reason"], "by": p.get("operator") or "auto"})
        elif ev.type == "frame.processed":
            c.cameras[str(p["camera_id"])].append(
                (t, float(p["fps"]), float(p["processing_latency_ms"]), int(p["dropped"])))
    return c


# --- HTML -----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
  background:#f3f4f6;color:#111827}
header{background:#111827;color:#f9fafb;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#9ca3af;font-size:13px}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
section{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);
  padding:16px 22px;margin:18px 0}
h2{font-size:18px;margin:4px 0 12px} h3{font-size:14px;color:#374151;margin:16px 0 6px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e5e7eb}
th{background:#f9fafb;color:#374151;font-weight:600} td.n{text-align:right;
  font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;display:block;margin:6px 0}
.badge{display:inline-block;border-radius:999px;padding:2px 10px;font-size:12px;
  margin-right:6px;background:#e5e7eb}
.live{background:#dcfce7;color:#166534} .log_only{background:#e0e7ff;color:#3730a3}
.canary{background:#fef3c7;color:#92400e} .rollback{color:#b91c1c;font-weight:600}
.note{background:#fef2f2;color:#991b1b;border-radius:8px;padding:8px 12px;margin:8px 0}
.muted{color:#6b7280;font-size:13px} a{color:#2563eb;text-decoration:none}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(x: float, digits: int = 1) -> str:
    return "—" if x != x else f"{x:,.{digits}f}"  # NaN → dash


def fmt_time(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if t else "—"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], numeric: set[int] = frozenset()
           ) -> str:
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>"


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def canary_step(policy: LivePolicy | None, a: AgentData) -> int:
    if policy is not None:
        return policy.canary_percent
    last = a.history[-1]["to"] if a.history else 0
    return 0 if last == 100 else last


def anchor(agent_id: str) -> str:
    return "agent-" + "".join(ch if ch.isalnum() else "-" for ch in agent_id)


def build_report(events: Iterable[Envelope], policies: Mapping[str, LivePolicy],
                 dead_letters: Mapping[str, int], title: str = "selflearn report", *,
                 refresh: int | None = None, notes: Sequence[str] = (),
                 generated_at: datetime | None = None) -> str:
    """One self-contained HTML page about ``events``, the live ``policies`` and dead letters.

    Parameters
    ----------
    events
        Envelopes in any order; types other than :data:`REPORT_TYPES` are only counted.
    policies
        The current live policy per agent id (mode, champion, canary).
    dead_letters
        Dead-letter record counts by reason.
    title
        Page title and heading.
    refresh
        Seconds after which a browser reloads the page (``None``: never).
    notes
        Warnings shown at the top (e.g. a source that could not be read).
    generated_at
        Time printed as "generated" (default: now).
    """
    from ops import report_plots as plots  # matplotlib: only when a page is built

    c = collect(events)
    until = c.last or datetime.now(UTC)
    meta = f'<meta http-equiv="refresh" content="{int(refresh)}">' if refresh else ""
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{meta}'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>")
    sub = (f"generated {fmt_time(generated_at or datetime.now(UTC))} · {c.events:,} events "
           f"from {fmt_time(c.first)} to {fmt_time(c.last)}")
    parts = [head, f"<header><h1>{esc(title)}</h1><p>{esc(sub)}</p></header><main>"]
    parts += [f'<div class="note">{esc(n)}</div>' for n in notes]
    parts.append(plots.agents_section(c, policies))
    parts.append(plots.dead_letter_section(dead_letters))
    if c.cameras:
        parts.append(plots.vision_section(c))
    for aid in sorted(set(c.agents) | set(policies)):
        parts.append(plots.agent_section(c.agents.get(aid) or AgentData(aid), policies.get(aid),
                                    until))
    parts.append("</main></body></html>")
    return "".join(parts)


# --- sources ---------------------------------------------------------------------------------

def load_from_archive(database_url: str, since: datetime | None = None, *,
                      cold_uri: str | None = None) -> list[Envelope]:
    """Report events from the PostgreSQL archive (and its cold store), in event-time order."""
    from projections.archive import EventArchive
    from projections.archive_cold import ColdStore
    from projections.replay import read_events

    archive = EventArchive(database_url, cold=ColdStore(cold_uri) if cold_uri else None)
    try:
        return list(read_events(archive, since=since, types=REPORT_TYPES))
    finally:
        archive.close()


def load_from_broker(bootstrap: str, topic_prefix: str, since: datetime | None = None, *,
                     timeout: float = 30.0) -> list[Envelope]:
    """Report events still retained on the broker's topics (the fallback without an archive)."""
    from projections.replay import read_broker
    from schemas.catalog import STREAMS, topic_name

    topics = [topic_name(topic_prefix, s) for s in STREAMS]
    return list(read_broker(bootstrap, topics, since=since, types=REPORT_TYPES,
                            timeout=timeout))


def load_dead_letters(bootstrap: str, topic_prefix: str, *, timeout: float = 30.0
                      ) -> dict[str, int]:
    """Dead-letter record counts by ``reason``, read from ``<prefix>.dlq``."""
    import asyncio

    from projections.replay import _consume
    from schemas.catalog import DEAD_LETTER, topic_name
    from schemas.deadletter import parse_dead_letter

    counts: Counter[str] = Counter()
    for value in asyncio.run(_consume(bootstrap, [topic_name(topic_prefix, DEAD_LETTER)],
                                      timeout)):
        try:
            counts[str(parse_dead_letter(value or b"{}").get("reason", "unknown"))] += 1
        except ValueError:
            counts["unparseable dead letter"] += 1
    return dict(counts)


def load_policies(redis_url: str, prefix: str) -> dict[str, LivePolicy]:
    """Every live policy stored in Redis under ``prefix``."""
    import redis

    from projections.policy_store import PolicyStore

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return PolicyStore(client, prefix).all_policies()
    finally:
        client.close()


def gather(kafka_bootstrap: str, database_url: str, redis_url: str, prefix: str,
           since: datetime | None = None, cold_uri: str | None = None
           ) -> tuple[list[Envelope], dict[str, LivePolicy], dict[str, int], list[str]]:
    """Read every source; a source that fails is reported as a note, never raised."""
    notes: list[str] = []
    events: list[Envelope] = []
    try:
        events = load_from_archive(database_url, since, cold_uri=cold_uri)
    except Exception as exc:  # noqa: BLE001 - fall back to the broker and say so
        notes.append(f"archive unreadable ({exc}); events read from the broker instead")
        try:
            events = load_from_broker(kafka_bootstrap, prefix, since)
        except Exception as exc2:  # noqa: BLE001
            notes.append(f"broker unreadable too ({exc2}); no events shown")
    policies: dict[str, LivePolicy] = {}
    try:
        policies = load_policies(redis_url, prefix)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"Redis unreadable ({exc}); live policies not shown")
    dead: dict[str, int] = {}
    try:
        dead = load_dead_letters(kafka_bootstrap, prefix)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"dead-letter topic unreadable ({exc}); counts not shown")
    return events, policies, dead, notes


# --- output ----------------------------------------------------------------------------------

def write_report(path: str | Path, page: str) -> Path:
    """Write ``page`` atomically to ``path`` (parents created); returns the resolved path."""
    out = Path(path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


class ReportServer:
    """A local HTTP server whose page ``regenerate()`` refreshes every ``every`` seconds.

    ``GET /`` returns the latest page; a failed regeneration keeps the last good one.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, port: int, regenerate: Callable[[], str], *, every: float = 5.0,
                 host: str = "127.0.0.1") -> None:
        self.regenerate, self.every = regenerate, every
        self.page = self._render()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html", "/report.html"):
                    body, status = server.page.encode("utf-8"), 200
                elif path == "/favicon.ico":
                    body, status = b"", 204
                else:
                    body, status = b"not found", 404
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                log.debug("report server: " + format, *args)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._threads = [threading.Thread(target=self.httpd.serve_forever, name="report-http",
                                          daemon=True),
                         threading.Thread(target=self._refresh, name="report-regen", daemon=True)]
        for t in self._threads:
            t.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def _render(self) -> str:
        try:
            return self.regenerate()
        except Exception as exc:  # noqa: BLE001 - keep serving; show the failure
            log.warning("report regeneration failed: %s", exc)
            previous = getattr(self, "page", None)
            return previous or (
                '<!DOCTYPE html><html><head><meta http-equiv="refresh" content="5">'
                '<link rel="icon" href="data:,"><title>selflearn report</title></head><body>'
                f"<p>report not available yet: {esc(exc)}</p></body></html>")

    def _refresh(self) -> None:
        while not self._stop.wait(self.every):
            self.page = self._render()

    def close(self) -> None:
        """Stop serving and regenerating."""
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        for t in self._threads:
            t.join(timeout=10)

    def __enter__(self) -> ReportServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(port: int, regenerate: Callable[[], str], *, every: float = 5.0,
          host: str = "127.0.0.1") -> ReportServer:
    """Serve ``regenerate()``'s page on ``http://host:port/`` (0: a free port), refreshed."""
    return ReportServer(port, regenerate, every=every, host=host)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
