"""PII never becomes an event: the scanner on real issue text, and the SDK's default scrub."""

from __future__ import annotations

import re
from pathlib import Path

from agents.client import AgentClient
from agents.privacy import redact, scan
from ops.data import data_path
from projections.datasets import read_storypoints, storypoint_projects
from schemas import decode

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
MENTION = re.compile(r"\[~[^\]\s]+\]")
HOME = re.compile(r"/Users/(?!<USER>)[^/\s]+")


def _real_texts() -> list[str]:
    folder = data_path("storypoints")
    return [f"{r.title}\n{r.description}" for p in storypoint_projects(folder)
            for r in read_storypoints(folder, p)]


def test_real_issue_text_leaves_no_emails_mentions_or_home_folders() -> None:
    texts = _real_texts()
    with_pii = [t for t in texts if EMAIL.search(t) or MENTION.search(t) or HOME.search(t)]
    assert len(with_pii) > 100  # the data really carries PII
    for text in with_pii:
        clean = redact(text)
        assert not EMAIL.search(clean), clean[:200]
        assert not MENTION.search(clean)
        assert not HOME.search(clean)


def test_findings_are_typed_and_cards_are_luhn_checked() -> None:
    kinds = [k for k, _ in scan("card 4111 1111 1111 1111, not 1234 5678 9012 3456; a@b.io")]
    assert kinds == ["EMAIL", "CARD"]
    assert redact("https://bob:hunter2@example.com/x") == "https://<CREDENTIALS>@example.com/x"
    assert redact("nothing personal here") == "nothing personal here"


def test_sdk_scrubs_free_text_before_the_event_exists(tmp_path: Path) -> None:
    client = AgentClient("task-estimator", bootstrap=None, outbox_path=tmp_path / "o.db")
    ev = client.emit("decision.requested", {"request_id": "r", "kind": "task_estimate",
                                            "context": {"title": "ask gw2001jp@gmail.com",
                                                        "project": "x"}})
    assert not isinstance(ev, bool)
    queued = client._outbox.peek(10)  # noqa: SLF001 - the bytes that would hit the wire
    client.close()
    assert b"gmail" not in queued[0][3]
    assert decode(queued[0][3]).payload["context"]["title"] == "ask <EMAIL>"
