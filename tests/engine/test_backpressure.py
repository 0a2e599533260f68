"""Live scheduling under load: a model slower than the stream, and models and sources that fail."""

from __future__ import annotations

import threading
import time

import pytest

from acquisition.xdf import XdfSource
from bci_affect.core.chunk import Chunk
from bci_affect.core.errors import DeviceError
from bci_affect.engine import Engine, EngineConfig, Prediction
from bci_affect.engine.models import DEFAULT_FACE_CHANNELS
from bci_affect.models.transfer import AffectModel

from .util import SIGNALS

EEG = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")


class GatedModel(AffectModel):
    """A model whose forward pass waits until the test opens the gate: slower than any stream."""

    def __init__(self) -> None:
        super().__init__(8, 4, face_ch_names=DEFAULT_FACE_CHANNELS, eeg_ch_names=EEG)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def forward(self, batch, **kwargs):
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return super().forward(batch, **kwargs)


class CrashingModel(AffectModel):
    def __init__(self) -> None:
        super().__init__(8, 4, face_ch_names=DEFAULT_FACE_CHANNELS, eeg_ch_names=EEG)
        self.calls = 0

    def forward(self, batch, **kwargs):
        self.calls += 1
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_slow_model_skips_oldest_windows_and_scores_the_newest(short_xdf):
    model = GatedModel()
    out: list[Prediction] = []
    with XdfSource(short_xdf, chunk_s=0.1) as src:
        chunks = list(src)
        engine = Engine(
            model,
            config=EngineConfig(realtime=True, max_pending=2, max_batch=2),
            signals=SIGNALS,
            sinks=[out.append],
        )
        session = engine.add_session("s", streams=src.streams)
        t0 = time.perf_counter()
        for c in chunks:
            session.push(c)
        push_s = time.perf_counter() - t0
        assert model.entered.wait(30)  # the model is busy with the first window(s)
        assert session.wait_windowed(60)
        st = session.stats
        # acquisition never waited for the model: every push returned at once
        assert push_s < 0.5 * len(chunks) * 0.1, push_s
        assert st.n_chunks == len(chunks) and st.n_input_dropped == 0
        assert len(session.pending) <= 2  # bounded, whatever the backlog
        assert st.n_windows > 10 and st.n_skipped >= st.n_windows - 4, st
        model.gate.set()
        assert engine.close(timeout=30)
    st = session.stats
    scored = [(p.index, p.n_skipped) for p in out]
    assert st.n_skipped > 0, st
    assert st.n_scored + st.n_skipped == st.n_windows, (st, scored)
    assert out[-1].index == st.n_windows - 1, scored  # the newest window was scored
    assert sum(p.n_skipped for p in out) == st.n_skipped, scored
    # each prediction says how many windows were skipped since the previous one
    assert out[0].index == out[0].n_skipped, scored
    for prev, p in zip(out, out[1:], strict=False):
        assert p.index - prev.index == p.n_skipped + 1, scored


def test_model_crash_never_stops_acquisition(short_xdf):
    model = CrashingModel()
    recorded: list[Chunk] = []
    errors = []
    with XdfSource(short_xdf, chunk_s=0.1) as src:
        n_chunks = sum(1 for _ in src)
        engine = Engine(
            model,
            config=EngineConfig(realtime=True, max_pending=512),  # the file is read at full speed
            signals=SIGNALS,
            on_error=errors.append,
        )
        session = engine.add_session("s", streams=src.streams)
        feeder = engine.feed(src, session, tee=recorded.append)
        assert feeder.join(60)
        assert engine.close(timeout=30)  # no hang
    assert feeder.error is None
    assert len(recorded) == n_chunks  # "recording" went on to the end
    st = session.stats
    assert st.n_chunks == n_chunks and st.n_windows > 0
    assert st.n_scored == 0 and st.n_failed == st.n_windows
    assert model.calls > 0
    (err,) = engine.errors
    assert err.stage == "model" and "illegal memory access" in str(err)
    assert err.count == st.n_errors["model"] == len(errors)


def test_source_error_is_reported_and_the_engine_closes(short_xdf):
    with XdfSource(short_xdf, chunk_s=0.1) as src:
        chunks = list(src)

    def failing():
        yield from chunks[:50]
        raise DeviceError("board disconnected (USB dongle unplugged)")

    engine = Engine("untrained", config=EngineConfig(realtime=True), signals=SIGNALS)
    session = engine.add_session("s")
    feeder = engine.feed(failing(), session)
    assert feeder.join(30)
    assert isinstance(feeder.error, DeviceError)
    assert engine.close(timeout=30)
    assert session.stats.n_chunks == 50
    assert [e.stage for e in engine.errors] == ["source"]
    assert "dongle" in str(engine.errors[0])


@pytest.mark.parametrize("realtime", [False, True])
def test_signals_error_is_isolated(short_xdf, realtime):
    """A chunk the signals chain refuses (a second EEG stream) is reported; the rest goes on."""
    from dataclasses import replace

    out: list[Prediction] = []
    with XdfSource(short_xdf, chunk_s=0.25) as src:
        config = EngineConfig(realtime=realtime, max_pending=512)
        engine = Engine("untrained", config=config, signals=SIGNALS, sinks=[out.append])
        session = engine.add_session("s", streams=src.streams)
        for i, chunk in enumerate(src):
            session.push(chunk)
            if i == 20 and chunk.info.type == "EEG":
                session.push(replace(chunk, info=replace(chunk.info, name="EEG2")))
        assert engine.close(timeout=30)
    assert [e.stage for e in engine.errors] == ["signals"]
    assert "two EEG streams" in str(engine.errors[0])
    assert out and session.stats.n_scored == session.stats.n_windows
