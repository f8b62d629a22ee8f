"""The SDK's re-send memory (agents.retention): what it keeps, what it forgets, and when."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agents.retention import AckedEvents


def _row(seq: int) -> tuple[int, str, bytes, bytes]:
    return (seq, "t", b"k", b"v%d" % seq)


class Group:
    """A consumer group's committed offsets, and which partitions it was asked about."""

    def __init__(self, commits: Mapping[tuple[str, int], int]) -> None:
        self.commits = dict(commits)
        self.asked: list[set[tuple[str, int]]] = []

    def __call__(self, parts: Iterable[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        self.asked.append(set(parts))
        return self.commits


def test_events_inside_the_window_are_kept_even_when_committed() -> None:
    kept = AckedEvents(window_s=10.0, max_events=100)
    for seq in range(3):
        kept.add("t", 0, seq, _row(seq), now=5.0)
    group = Group({("t", 0): 3})
    kept.trim(now=14.0, committed=group)
    assert len(kept) == 3
    assert group.asked == []  # nothing old: the group is not asked at all


def test_old_committed_events_go_and_uncommitted_ones_stay() -> None:
    kept = AckedEvents(window_s=1.0, max_events=100)
    for offset in range(5):
        kept.add("t", 0, offset, _row(offset), now=0.0)
    kept.trim(now=2.0, committed=Group({("t", 0): 3}))
    assert [row[0] for row in kept.take_all()] == [3, 4]


def test_an_uncommitted_old_event_holds_back_the_committed_ones_behind_it() -> None:
    kept = AckedEvents(window_s=1.0, max_events=100)
    kept.add("t", 1, 7, _row(0), now=0.0)  # partition 1: nobody committed it yet
    kept.add("t", 0, 0, _row(1), now=0.0)
    kept.add("t", 0, 1, _row(2), now=0.0)
    group = Group({("t", 0): 2})
    kept.trim(now=2.0, committed=group)
    assert len(kept) == 3
    assert group.asked == [{("t", 0), ("t", 1)}]
    group.commits[("t", 1)] = 8
    kept.trim(now=3.0, committed=group)
    assert len(kept) == 0


def test_without_a_group_the_window_alone_decides() -> None:
    kept = AckedEvents(window_s=1.0, max_events=100)
    kept.add("t", 0, 0, _row(0), now=0.0)
    kept.add("t", 0, 1, _row(1), now=5.0)
    kept.trim(now=5.5, committed=None)
    assert [row[0] for row in kept.take_all()] == [1]


def test_the_bound_evicts_the_oldest_and_counts_them() -> None:
    kept = AckedEvents(window_s=60.0, max_events=3)
    for offset in range(5):
        kept.add("t", 0, offset, _row(offset), now=0.0)
    assert kept.evicted == 2
    assert [row[0] for row in kept.take_all()] == [2, 3, 4]
    assert len(kept) == 0


def test_trimming_costs_what_it_forgets_not_what_it_keeps() -> None:
    """50 000 kept events behind an uncommitted head: each trim looks at one of them."""
    kept = AckedEvents(window_s=1.0, max_events=100_000)
    for offset in range(50_000):
        kept.add("t", 0, offset, _row(offset), now=0.0)

    looked = 0

    def group(parts: Iterable[tuple[str, int]]) -> Mapping[tuple[str, int], int]:
        return {}

    original = kept._events  # noqa: SLF001

    class Peeking:
        """The deque, counting how often its head is read."""

        def __getitem__(self, i: int) -> object:
            nonlocal looked
            looked += 1
            return original[i]

        def __len__(self) -> int:
            return len(original)

        def __bool__(self) -> bool:
            return bool(original)

    kept._events = Peeking()  # type: ignore[assignment]  # noqa: SLF001
    for second in range(2, 12):
        kept.trim(now=float(second), committed=group)
    assert looked <= 3 * 10
    assert len(original) == 50_000
