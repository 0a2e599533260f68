"""The bundled default model: small, complete, documented, and it scores a simulated session."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bci_affect.core import ConfigError
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.pretrained import default_model_path, load_default_model
from bci_affect.processors import SignalPipeline
from bci_affect.training.inputs import window_batch

from .sessions import CYTON, eeg_info, load_streams


def test_the_bundled_model_is_small_and_documents_itself():
    path = default_model_path()
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    assert set(files) == {"config.json", "weights.safetensors"}
    assert sum(files.values()) < 1_000_000
    doc = json.loads((path / "config.json").read_text())
    assert doc["config"]["eeg_inputs"] == "sites"  # montage-free: any board
    assert doc["config"]["eeg_ch_names"] == list(VIRTUAL_SITES) and doc["config"]["sfreq"] is None
    assert doc["class_names"] == ["LVLA", "LVHA", "HVLA", "HVHA"] and doc["calibrated"]
    meta = doc["metadata"]
    assert "scripts/make_default_model.sh" in meta["description"]
    rows = meta["metrics"]["val"]["rows"]
    assert {"fused", "teacher", "student", "majority", "logistic", "chance"} <= set(rows)
    assert meta["features"]["window_s"] == 4.0


def test_the_bundled_model_scores_a_simulated_session_live(sim_dataset):
    streams = load_streams(sorted(sim_dataset.rglob("*.xdf"))[0])
    eeg, face = streams["EEG"], streams["FaceFeatures"]
    m = load_default_model(eeg=eeg.info, face=face.info, label_scheme="quadrant")
    pipe = SignalPipeline(m.signals)
    results = []
    step = 2.0  # feed both streams in 2 s chunks, in time order, as a live session would
    for t in np.arange(eeg.times[0], eeg.times[-1] + step, step):
        results += pipe(face.slice_times(t, t + step))
        results += pipe(eeg.slice_times(t, t + step))
    results += pipe.flush()
    assert len(results) > 100
    batch = window_batch(results, sites=m.model.config.montage_free)
    with torch.inference_mode():
        out = m.model(batch)
    probs = out.probs.numpy()
    assert probs.shape == (len(results), 4)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    u = out.uncertainty.numpy()
    assert np.all((u > 0) & (u <= 1))
    assert out.prediction_sets is not None and out.prediction_sets.any(1).all()
    # windows with a face get a more certain fused opinion than the vacuous student alone
    assert out.face_available.any()


@pytest.mark.parametrize(
    "ch_names",
    [
        CYTON,
        ("TP9", "AF7", "AF8", "TP10"),  # Muse
        ("Fz", "C3", "Cz", "C4", "Pz", "PO7", "Oz", "PO8"),  # part of BrainFlow's synthetic board
        ("Fp1", "Fp2", "O1", "O2"),  # a Ganglion named with --montage
    ],
)
def test_the_bundled_model_fits_any_montage_with_scalp_positions(ch_names):
    assert load_default_model(eeg=eeg_info(ch_names)).model.config.montage_free


def test_the_bundled_model_refuses_labels_without_scalp_positions():
    with pytest.raises(ConfigError, match="no scalp position.*--montage"):
        load_default_model(eeg=eeg_info(("EEG1", "EEG2", "EEG3", "EEG4")))


def test_a_session_says_which_electrodes_the_model_reads():
    from bci_affect.engine import Engine, EngineConfig

    engine = Engine(None, config=EngineConfig(realtime=False, device="cpu"))
    try:
        s = engine.add_session("m", streams=[eeg_info(("TP9", "AF7", "AF8", "TP10", "EXG 5"))])
        line = s.montage_line()
        assert line.startswith("EEG montage: 4 of 5 channels used (TP9, AF7, AF8, TP10)")
        assert "EXG 5 (no scalp position" in line and "--montage" in line
    finally:
        engine.close()
