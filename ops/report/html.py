"""HTML building blocks of the report: style sheet, escaping, number formats, tables.

>>> esc("<b>"), fmt(float("nan")), fmt(1234.5)
('&lt;b&gt;', '—', '1,234.5')
>>> table(["a", "n"], [["x", 1]], numeric={1}).count('<td class="n">1</td>')
1
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

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


def table(head: Sequence[str], rows: Iterable[Sequence[Any]],
          numeric: AbstractSet[int] = frozenset()) -> str:
    ths = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                         for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>"


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def anchor(agent_id: str) -> str:
    return "agent-" + "".join(ch if ch.isalnum() else "-" for ch in agent_id)
