"""Helpers of the engine tests: replay a recording through an engine, compare predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from acquisition.xdf import XdfSource
from bci_affect.engine import Engine, EngineConfig, Prediction
from bci_affect.processors import SignalsConfig

SIGNALS = SignalsConfig.make(line_hz=50.0)


def replay(
    path: Path,
    *,
    model="untrained",
    streams: Sequence[str] | None = None,
    chunk_s: float = 0.5,
    config: EngineConfig | None = None,
    signals: SignalsConfig = SIGNALS,
) -> list[Prediction]:
    """Every prediction of one in-process replay (a fresh engine; by default the untrained
    model, so that the tests do not depend on which model is bundled)."""
    out: list[Prediction] = []
    with XdfSource(path, streams=streams, chunk_s=chunk_s) as src:
        engine = Engine(
            model,
            config=config or EngineConfig(realtime=False),
            signals=signals,
            sinks=[out.append],
        )
        session = engine.add_session("s", streams=src.streams)
        for chunk in src:
            session.push(chunk)
        assert engine.close(timeout=30)
    assert not engine.errors, engine.errors
    return out


#: Prediction fields that must agree between runs (latencies and lag never do).
NUMBERS = (
    "probs",
    "probs_teacher",
    "probs_student",
    "uncertainty",
    "uncertainty_teacher",
    "uncertainty_student",
    "disagreement",
    "face_reliability",
    "eeg_reliability",
)
FLAGS = ("index", "face_available", "eeg_available", "face_used", "eeg_used")


def assert_same_predictions(
    a: Sequence[Prediction], b: Sequence[Prediction], *, atol: float = 0.0, dt: float = 0.0
) -> None:
    """Same windows (end times within ``dt`` after removing a constant shift) and the same
    numbers (exactly, or within ``atol``)."""
    assert len(a) == len(b) > 0
    ta = np.array([p.t_window_end for p in a])
    tb = np.array([p.t_window_end for p in b])
    shift = tb[0] - ta[0]
    np.testing.assert_allclose(tb - shift, ta, rtol=0, atol=max(dt, 1e-9))
    for pa, pb in zip(a, b, strict=True):
        for name in FLAGS:
            assert getattr(pa, name) == getattr(pb, name), (name, pa.index)
        for name in NUMBERS:
            va, vb = np.asarray(getattr(pa, name)), np.asarray(getattr(pb, name))
            if atol == 0:
                np.testing.assert_array_equal(va, vb, err_msg=f"{name} of window {pa.index}")
            else:
                np.testing.assert_allclose(va, vb, rtol=0, atol=atol, err_msg=f"{name} {pa.index}")
        assert pa.quality["bad_channels"] == pb.quality["bad_channels"]
