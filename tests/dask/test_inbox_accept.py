"""Inbox.accept that fails part-way (a sender over its credit) leaves every queued
packet with its origin, so popping returns each credit to the sender that used it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage_core.runtime.transport import Inbox, TransportError


def test_a_push_failing_mid_batch_keeps_origins_and_credits_in_step() -> None:
    inbox = Inbox(capacity=4, senders=["a", "b"])  # 2 credits each, 4 slots
    inbox.accept("a", ["a0"])
    with pytest.raises(TransportError, match="more packets than its 2 credits"):
        inbox.accept("b", ["b0", "b1", "b2", "b3"])  # three fit, the fourth fails
    assert inbox.pop(10) == ["a0", "b0", "b1", "b2"]
    assert inbox.take_owed("a") == 1
    assert inbox.take_owed("b") == 3


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 6)), max_size=20
    ),
    st.integers(1, 12),
)
def test_every_queued_packet_returns_one_credit_to_its_sender(
    batches: list[tuple[str, int]], capacity: int
) -> None:
    inbox = Inbox(capacity=capacity, senders=["a", "b", "c"])
    queued = {"a": 0, "b": 0, "c": 0}
    for n, (sender, size) in enumerate(batches):
        before = inbox.queue.size
        try:
            inbox.accept(sender, [(sender, n, i) for i in range(size)])
        except TransportError:
            pass
        queued[sender] += inbox.queue.size - before
        if n % 3 == 2:  # the receiver pops now and then
            inbox.pop(2)
    inbox.pop(10_000)
    returned = {s: inbox.take_owed(s) for s in queued}
    assert returned == queued
