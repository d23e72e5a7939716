"""The core's inbox: bounded, batched takes, QoS 1 before QoS 0 (pure logic, threads)."""

from __future__ import annotations

import threading
import time

from edgewise.edge.core.inbox import Inbox


def test_takes_in_order_up_to_most_with_the_first_lane_first() -> None:
    inbox: Inbox[str] = Inbox(10)
    for item in ("q0-a", "q0-b"):
        assert inbox.put_nowait(item)
    assert inbox.put_nowait("q1-a", first=True)
    assert inbox.put_nowait("q1-b", first=True)
    assert len(inbox) == 4
    assert inbox.take(3, timeout=0) == ["q1-a", "q1-b", "q0-a"]
    assert inbox.take(3, timeout=0) == ["q0-b"]
    assert inbox.empty() and inbox.take(3, timeout=0.01) == []


def test_the_bound_holds_for_both_lanes() -> None:
    inbox: Inbox[int] = Inbox(2)
    assert inbox.put_nowait(1) and inbox.put_nowait(2, first=True)
    assert not inbox.put_nowait(3) and not inbox.put_nowait(4, first=True)
    started = time.monotonic()
    assert not inbox.put(5, timeout=0.05)  # waits for room, none comes
    assert time.monotonic() - started >= 0.04


def test_a_waiting_put_gets_the_room_a_take_makes() -> None:
    inbox: Inbox[int] = Inbox(1)
    assert inbox.put_nowait(1)
    result: list[bool] = []
    putter = threading.Thread(target=lambda: result.append(inbox.put(2, timeout=5.0)))
    putter.start()
    time.sleep(0.05)
    assert inbox.take(1, timeout=0) == [1]
    putter.join(5)
    assert result == [True] and inbox.take(1, timeout=0) == [2]


def test_a_waiting_take_wakes_on_a_put() -> None:
    inbox: Inbox[int] = Inbox(4)
    threading.Timer(0.05, lambda: inbox.put_nowait(7)).start()
    started = time.monotonic()
    assert inbox.take(4, timeout=5.0) == [7]
    assert time.monotonic() - started < 4.0
