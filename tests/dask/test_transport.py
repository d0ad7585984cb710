"""The cross-worker transport's ordering: blobs that overtake each other on the wire
still enter the receiver's queue in the order their sender sent them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core.runtime.transport import Inbox, TransportError


@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=12).flatmap(
        lambda sizes: st.tuples(st.just(sizes), st.permutations(range(len(sizes))))
    ),
    st.permutations(["a", "b"]),
)
def test_blobs_enter_the_queue_in_sequence_order(
    case: tuple[list[int], list[int]], senders: list[str]
) -> None:
    sizes, arrival = case
    inbox = Inbox(capacity=2 * sum(sizes), senders=["a", "b"])
    blobs = {s: [] for s in senders}
    n = 0
    for size in sizes:
        for s in senders:
            blobs[s].append([(s, n + i) for i in range(size)])
        n += size
    for seq in arrival:  # both senders' blobs arrive shuffled, interleaved
        for s in senders:
            inbox.accept_in_order(s, seq, blobs[s][seq])
    assert inbox.held == 0
    got = inbox.pop(10_000)
    for s in senders:
        mine = [p for p in got if p[0] == s]
        assert mine == [
            p for blob in blobs[s] for p in blob
        ]  # sent order, nothing lost


def test_early_blobs_wait_and_duplicates_are_errors() -> None:
    inbox = Inbox(capacity=8, senders=["a"])
    inbox.accept_in_order("a", 1, ["second"])
    assert inbox.queue.size == 0 and inbox.held == 1
    inbox.accept_in_order("a", 0, ["first"])
    assert inbox.pop(8) == ["first", "second"] and inbox.held == 0
    with pytest.raises(TransportError, match="twice"):
        inbox.accept_in_order("a", 1, ["again"])
    with pytest.raises(TransportError, match="not an upstream replica"):
        inbox.accept_in_order("z", 0, ["stranger"])
