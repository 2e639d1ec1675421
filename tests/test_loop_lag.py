"""The loop-lag monitor on a real event loop: a blocking call shows up as lag."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from scheduler.loop_lag import LoopLag, percentile


def test_percentile_by_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([], 0.99) == 0.0


def test_window_is_bounded() -> None:
    lag = LoopLag(window=10, threshold=10.0)
    for i in range(25):
        lag.record(i / 1000)
    stats = lag.stats()
    assert stats.samples == 10
    assert stats.max == pytest.approx(0.024)
    assert stats.to_json()["max_ms"] == 24.0


def test_a_blocking_call_shows_as_lag(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> LoopLag:
        loop = asyncio.get_running_loop()
        spikes: asyncio.Future[float] = loop.create_future()
        ticked = asyncio.Event()
        monitor = LoopLag(interval=0.01, window=100, threshold=0.1, report_every=0.0)

        def spike(lag: float) -> None:
            monitor._warn(lag)
            if not spikes.done():
                spikes.set_result(lag)

        monitor.on_spike = spike
        real_record = monitor.record

        def record(lag: float) -> None:
            real_record(lag)
            ticked.set()

        monitor.record = record  # type: ignore[method-assign]
        monitor.start()
        await ticked.wait()  # the monitor runs
        time.sleep(0.3)  # a handler holding the loop
        lag = await asyncio.wait_for(spikes, timeout=10)
        monitor.stop()
        assert lag >= 0.25
        return monitor

    with caplog.at_level(logging.INFO, logger="scheduler.loop_lag"):
        monitor = asyncio.run(scenario())
    stats = monitor.stats()
    assert stats.max >= 0.25
    assert stats.p99 >= 0.25  # one sample in a few: the 99th percentile is it
    assert any("ms late" in r.message for r in caplog.records)
    assert any("loop lag over the last" in r.message for r in caplog.records)
