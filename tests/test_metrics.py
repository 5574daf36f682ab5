"""/metrics' model gauges, read from the manager's models (no server, no model)."""

from __future__ import annotations

from types import SimpleNamespace

from llamaserve.observability import Metrics


def served(name: str, in_flight: int, waiting: int | None) -> SimpleNamespace:
    """A manager's model as render() reads it; `waiting` None: not loaded."""
    engine = None
    if waiting is not None:
        sequences = {"parallel": 4, "running": min(in_flight, 4), "waiting": waiting}
        engine = SimpleNamespace(memory_bytes=1000, sequences=lambda: sequences)
    return SimpleNamespace(spec=SimpleNamespace(id=name), in_flight=in_flight,
                           loaded=engine is not None, engine=engine)


def test_queue_depth_counts_requests_waiting_for_a_sequence() -> None:
    # 6 in flight on a 4-sequence model: 2 wait; 3 on another: none waits (not 2, as
    # in_flight - 1 would say); an unloaded model has no queue.
    text = Metrics().render([served("a", 6, 2), served("b", 3, 0), served("c", 0, None)])
    lines = text.decode().splitlines()
    assert "llamaserve_queue_depth 2.0" in lines
    assert 'llamaserve_requests_in_flight{model="a"} 6.0' in lines
    assert 'llamaserve_model_loaded{model="c"} 0.0' in lines
