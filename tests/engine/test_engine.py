"""The engine on a simulated recording: determinism, batching, missing face, sessions, sinks."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from acquisition.xdf import XdfSource
from bci_affect.core.errors import ConfigError
from bci_affect.engine import (
    UNTRAINED_MODEL,
    Engine,
    EngineConfig,
    Prediction,
    StreamSignature,
)
from bci_affect.engine.models import untrained_model

from .util import SIGNALS, assert_same_predictions, replay

ENGINE_DIR = Path(__file__).resolve().parents[2] / "bci_affect" / "engine"


def test_engine_never_imports_acquisition():
    for path in ENGINE_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("acquisition", "calibration")), (path.name, name)


def test_replay_is_deterministic(short_xdf):
    a = replay(short_xdf)
    b = replay(short_xdf)
    assert_same_predictions(a, b)  # bit for bit
    assert [p.to_json() for p in a] != []
    strip = [{k: v for k, v in p.to_dict().items() if k != "latency_ms"} for p in a]
    assert strip == [{k: v for k, v in p.to_dict().items() if k != "latency_ms"} for p in b]
    # one prediction per hop, on the window grid, from the first full window on
    t = np.array([p.t_window_end for p in a])
    np.testing.assert_allclose(np.diff(t), SIGNALS.window.hop_s)
    assert [p.index for p in a] == list(range(len(a)))
    p = a[len(a) // 2]
    assert p.model == UNTRAINED_MODEL
    assert p.classes == ("LVLA", "LVHA", "HVLA", "HVHA")
    assert math.isclose(p.probs.sum(), 1.0, rel_tol=1e-5)
    assert 0 < p.uncertainty <= 1 and p.face_available and p.face_used
    assert p.lag_ms is None  # offline: no wall clock to compare with


def test_batching_and_chunking_do_not_change_predictions(short_xdf):
    ref = replay(short_xdf, config=EngineConfig(realtime=False, max_batch=64))
    one = replay(short_xdf, config=EngineConfig(realtime=False, max_batch=1), chunk_s=0.1)
    odd = replay(short_xdf, config=EngineConfig(realtime=False, max_batch=7), chunk_s=0.7)
    frames = {p.quality["face_frames"] for p in ref}
    assert len(frames) > 1  # windows with different frame counts shared batches
    assert_same_predictions(ref, one, atol=1e-6)
    assert_same_predictions(ref, odd, atol=1e-6)


def test_missing_face_gives_finite_predictions_without_face(short_xdf):
    preds = replay(short_xdf, streams=["EEG", "Markers"])
    assert preds
    for p in preds:
        assert not p.face_available and not p.face_used
        assert np.isfinite(p.probs).all() and math.isclose(p.probs.sum(), 1.0, rel_tol=1e-5)
        assert np.isfinite([p.uncertainty, p.disagreement]).all()
        assert p.disagreement == 0.0  # no teacher to disagree with
        assert p.quality["face_frames"] == 0
    row = preds[0].to_row()
    assert np.isfinite(row[:3]).all()


def test_missing_face_realtime_engine(short_xdf):
    """Live scheduling, EEG only: the windower does not wait for a face stream."""
    out: list[Prediction] = []
    with XdfSource(short_xdf, streams=["EEG"], chunk_s=0.2) as src:
        engine = Engine(
            "untrained",
            config=EngineConfig(realtime=True, max_pending=64),
            signals=SIGNALS,
            sinks=[out.append],
        )
        session = engine.add_session("eeg-only", streams=src.streams)
        engine.feed(src, session).join(30)
        assert engine.close(timeout=30)
    assert out and all(not p.face_available for p in out)
    assert all(np.isfinite(p.probs).all() for p in out)
    assert all(p.lag_ms is not None for p in out)


def test_sessions_share_one_engine_and_model(short_xdf):
    """Four participants' streams through one engine (live scheduling): one model, mixed
    batches, and each session's predictions equal a replay of its own."""
    ref = replay(short_xdf)
    model = untrained_model(
        StreamSignature(
            eeg_ch_names=("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"),
            sfreq=250.0,
            n_times=1000,
        )
    )
    sizes: list[int] = []
    model.register_forward_hook(lambda m, args, out: sizes.append(len(args[0])))
    outs: dict[str, list[Prediction]] = {f"P{i}": [] for i in range(4)}
    engine = Engine(model, config=EngineConfig(realtime=True, max_pending=512), signals=SIGNALS)
    sources = [XdfSource(short_xdf, chunk_s=0.25) for _ in outs]
    feeders = []
    for (name, sink), src in zip(outs.items(), sources, strict=True):
        src.__enter__()
        session = engine.add_session(name, streams=src.streams, sinks=[sink.append])
        feeders.append(engine.feed(src, session))
    assert all(f.join(60) for f in feeders)
    assert engine.close(timeout=60)
    assert not engine.errors
    assert len({id(s.model) for s in engine.sessions}) == 1
    assert sum(sizes) == 4 * len(ref)
    for name, preds in outs.items():
        assert {p.session for p in preds} == {name}
        assert sum(p.n_skipped for p in preds) == 0
        preds.sort(key=lambda p: p.index)
        # the given model is the untrained one with the same seed and face prior
        np.testing.assert_allclose(
            [p.probs for p in preds], [p.probs for p in ref], rtol=0, atol=1e-6
        )


def test_sink_errors_are_isolated(short_xdf):
    got: list[Prediction] = []
    errors = []

    def broken(p: Prediction) -> None:
        raise OSError("disk full")

    with XdfSource(short_xdf, chunk_s=0.5) as src:
        engine = Engine(
            "untrained",
            config=EngineConfig(realtime=False),
            signals=SIGNALS,
            sinks=[got.append],
            on_error=errors.append,
        )
        session = engine.add_session("s", streams=src.streams, sinks=[broken])
        for chunk in src:
            session.push(chunk)
        engine.close()
    assert got and len(got) == session.stats.n_scored
    assert errors and errors[0].stage == "sink" and "disk full" in str(errors[0])
    assert engine.errors[0].count == len(errors)


def test_model_that_does_not_fit_is_refused_before_start(short_xdf):
    other = untrained_model(StreamSignature(("Cz", "Pz"), 250.0, 1000))
    with XdfSource(short_xdf) as src:
        engine = Engine(other, signals=SIGNALS)
        with pytest.raises(ConfigError, match="EEG channels"):
            engine.add_session("s", streams=src.streams)
        engine.close()


def test_engine_config_is_validated():
    with pytest.raises(ConfigError, match="max_batch"):
        EngineConfig(max_batch=0)
    with pytest.raises(ConfigError, match="device"):
        Engine(config=EngineConfig(device="tpu"))
    engine = Engine(config=EngineConfig(realtime=False))
    engine.add_session("a")
    with pytest.raises(ConfigError, match="exists already"):
        engine.add_session("a")
    engine.close()


def test_push_windows_scores_windows_from_the_offline_chain(short_xdf):
    """Windows cut by the vectorised offline chain score like the engine's own windows."""
    from bci_affect.processors import process_recording

    ref = replay(short_xdf)
    with XdfSource(short_xdf) as src:
        streams = {c.info.name: c for c in src.load()}
    results = process_recording(streams["EEG"], streams["FaceFeatures"], SIGNALS)
    out: list[Prediction] = []
    engine = Engine(
        "untrained", config=EngineConfig(realtime=False, max_batch=16), sinks=[out.append]
    )
    session = engine.add_session("w", streams=[c.info for c in streams.values()])
    session.push_windows(results[:10])
    session.push_windows(results[10:])
    assert engine.close()
    assert_same_predictions(ref, out, atol=1e-5)


def test_default_model_is_the_bundled_one(short_xdf):
    """No model given: the engine scores with the bundled model (this copy ships one and the
    Cyton montage at 250 Hz fits it): its weights tensor for tensor, its name in every
    prediction, and predictions unlike the untrained face-prior-only fallback's."""
    from safetensors.torch import load_file

    from bci_affect.engine import bundled_model_path
    from bci_affect.pretrained import default_model_path

    path = bundled_model_path()
    assert path is not None and path == default_model_path()
    out: list[Prediction] = []
    with XdfSource(short_xdf) as src:
        engine = Engine(config=EngineConfig(realtime=False), signals=SIGNALS, sinks=[out.append])
        session = engine.add_session("s", streams=src.streams)
        for chunk in src:
            session.push(chunk)
        assert engine.close(timeout=30)
    assert not engine.errors, engine.errors
    loaded = session.model
    assert loaded.name == f"bundled ({path.name})" != UNTRAINED_MODEL
    bundled = load_file(path / "weights.safetensors")
    weights = loaded.model.state_dict()
    assert set(bundled) <= set(weights)
    for key, tensor in bundled.items():
        assert torch.equal(weights[key].cpu(), tensor), key
    fallback = replay(short_xdf)  # the untrained model: the face expression prior alone
    assert len(out) == len(fallback) > 0
    assert {p.model for p in out} == {loaded.name}
    assert {p.model for p in fallback} == {UNTRAINED_MODEL}
    probs = np.array([p.probs for p in out])
    diff = np.abs(probs - np.array([p.probs for p in fallback])).max(axis=1)
    assert np.all(diff > 0.01) and np.median(diff) > 0.1, diff


@pytest.mark.gpu
def test_cuda_engine_matches_cpu(short_xdf):
    cpu = replay(short_xdf)
    gpu = replay(short_xdf, config=EngineConfig(realtime=False, device="cuda"))
    assert_same_predictions(cpu, gpu, atol=1e-4)


def test_use_model_switches_between_batches_and_window_sinks_see_every_window(short_xdf):
    """A session switched to another model mid-replay: the windows before the switch are
    scored by the first model, every window after it by the second (named in the
    predictions); window sinks receive every window, in order, before it is scored."""
    sig = StreamSignature(("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2"), 250.0, 1000)
    second = untrained_model(sig)
    with torch.no_grad():  # a different student: different probabilities
        for p in second.student.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ref = replay(short_xdf)
    out: list[Prediction] = []
    windows: list[int] = []
    n_scored_at_switch = None
    with XdfSource(short_xdf, chunk_s=0.5) as src:
        engine = Engine(
            "untrained",
            config=EngineConfig(realtime=False, max_batch=1),
            signals=SIGNALS,
            sinks=[out.append],
        )
        session = engine.add_session(
            "s",
            streams=src.streams,
            window_sinks=[lambda rs: windows.extend(r.window.index for r in rs)],
        )
        for i, chunk in enumerate(src):
            session.push(chunk)
            if i == 40:
                n_scored_at_switch = len(out)
                session.use_model(second, "second")
        assert engine.close(timeout=30)
    assert not engine.errors
    assert windows == [p.index for p in ref]
    assert 0 < n_scored_at_switch < len(out) == len(ref)
    before, after = out[:n_scored_at_switch], out[n_scored_at_switch:]
    assert {p.model for p in after} == {"second"}
    assert "second" not in {p.model for p in before}
    assert_same_predictions(before, ref[:n_scored_at_switch], atol=1e-6)
    assert (
        max(
            abs(p.probs_student - r.probs_student).max()
            for p, r in zip(after, ref[n_scored_at_switch:], strict=True)
        )
        > 1e-3
    )
    other = untrained_model(StreamSignature(("Cz", "Pz"), 250.0, 1000))
    with pytest.raises(ConfigError, match="EEG channels"):
        session.use_model(other, "other")
