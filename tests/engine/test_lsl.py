"""The engine on LSL: real-time replay through inlets, and the AffectPredictions stream."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from acquisition.lsl import Outlet
from acquisition.lsl_inlet import LslSource
from acquisition.player import Player
from acquisition.xdf import XdfSource
from bci_affect.engine import (
    PREDICTIONS_TYPE,
    Engine,
    EngineConfig,
    Prediction,
    prediction_channels,
    predictions_chunk,
    predictions_stream_info,
    row_to_dict,
)

from .util import SIGNALS, assert_same_predictions, replay


def _wait_until(predicate, timeout: float) -> bool:
    """Wait (with a deadline) until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    tick = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        tick.wait(0.02)
    return True


@pytest.mark.lsl
def test_predictions_outlet_is_received_by_an_inlet(short_xdf, uid):
    preds = replay(short_xdf)
    info = predictions_stream_info(
        preds[0].classes, name=f"AffectPredictions-{uid}", source_id=f"ap-{uid}", session="s"
    )
    outlet = Outlet(info)
    got = []
    try:
        with LslSource(f"source_id=ap-{uid}", timeout_s=10) as src:
            (stream,) = [s for s in src.streams if s.source_id == f"ap-{uid}"]
            assert stream.type == PREDICTIONS_TYPE
            assert stream.ch_names == prediction_channels(preds[0].classes)
            assert stream.channel_format == "double64" and stream.sfreq == 0
            assert outlet.wait_for_consumers(10)
            for p in preds:  # one sample per prediction, as the live sink pushes them
                outlet.push(predictions_chunk([p], info))
            for chunk in src:
                if chunk.info.source_id == f"ap-{uid}":
                    got.append(chunk)
                if sum(c.n_times for c in got) >= len(preds):
                    break
    finally:
        outlet.close()
    data = np.concatenate([c.data for c in got], axis=1)  # (n_chans, n)
    times = np.concatenate([c.times for c in got])
    assert data.shape == (len(info.ch_names), len(preds))
    for i, p in enumerate(preds):
        row = row_to_dict(data[:, i], info.ch_names)
        assert row["t_window_end"] == p.t_window_end
        assert abs(times[i] - p.t_window_end) < 1e-3  # stamped with the window's end
        assert row["window_index"] == p.index and row["predicted"] == p.predicted
        for k, c in enumerate(p.classes):
            assert row[f"p_{c}"] == p.probs[k]
            assert row[f"p_teacher_{c}"] == p.probs_teacher[k]
            assert np.isnan(row[f"set_{c}"])  # no conformal predictor
        assert row["face_available"] == 1.0 and row["uncertainty"] == p.uncertainty
        assert row["latency_total_ms"] == pytest.approx(p.latency_ms["total"])


@pytest.mark.lsl
@pytest.mark.slow
def test_realtime_lsl_replay_equals_in_process_replay(short_xdf, uid):
    """The same recording, published by a Player at 4x and read back by LSL inlets, gives the
    predictions of the in-process replay (to LSL's clock-correction jitter).

    Windows wait up to ``face_wait_s`` of EEG time for late face frames; at 4x that is a
    quarter of the wall-clock time, so the wait is raised (in both paths) to keep a busy test
    machine's scheduling hiccups from cutting face frames off a window.
    """
    signals = replace(SIGNALS, window=replace(SIGNALS.window, face_wait_s=4.0))
    ref = replay(short_xdf, signals=signals)
    out: list[Prediction] = []
    player = Player(
        short_xdf, speed=4.0, source_id_prefix=f"test-{uid}", wait_for_consumers_s=10.0
    ).start()
    try:
        src = LslSource([f"source_id={s.source_id}" for s in player.streams], timeout_s=10)
        with src:
            engine = Engine(
                "untrained",
                config=EngineConfig(realtime=True, max_pending=512),
                signals=signals,
                sinks=[out.append],
            )
            session = engine.add_session("live", streams=src.streams)
            feeder = engine.feed(src, session)
            assert player.join(120)
            assert _wait_until(
                lambda: all(
                    session.stats.n_samples.get(k, 0) >= n for k, n in player.n_pushed.items()
                ),
                20,
            ), (session.stats.n_samples, player.n_pushed)
            src.stop()
            assert feeder.join(10)
        assert engine.close(timeout=30)
    finally:
        player.stop()
    assert not engine.errors
    assert session.stats.n_skipped == 0
    out.sort(key=lambda p: p.index)
    assert [p.index for p in out] == [p.index for p in ref]
    # A face frame stamped exactly on a window edge (the simulator's first frame is) may land
    # on either side once each inlet's clock correction is added: LSL jitter, not a
    # difference of the pipelines. Such windows may differ by that one frame.
    with XdfSource(short_xdf, streams=["FaceFeatures"]) as x:
        (face,) = x.load()
    edges = np.array([[p.t_window_end - p.window_s, p.t_window_end] for p in ref])
    near = np.abs(face.times[None, None, :] - edges[:, :, None]).min(axis=(1, 2)) < 1e-4
    exact = [i for i in range(len(ref)) if not near[i]]
    assert len(exact) >= len(ref) // 2
    for i in np.flatnonzero(near):
        assert abs(ref[i].quality["face_frames"] - out[i].quality["face_frames"]) <= 1
    assert_same_predictions([ref[i] for i in exact], [out[i] for i in exact], atol=1e-5, dt=1e-3)
    shifted = np.array([p.t_window_end for p in out]) - player.offset_s
    np.testing.assert_allclose(shifted, [p.t_window_end for p in ref], rtol=0, atol=1e-3)
    # live records carry the lag behind the LSL clock (negative here: 4x timestamps run ahead)
    assert all(p.lag_ms is not None and np.isfinite(p.lag_ms) for p in out)
