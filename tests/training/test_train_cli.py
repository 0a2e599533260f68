"""``bci-affect train`` end to end on simulated XDF sessions, and the model folder it writes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time

import numpy as np
import pylsl
import pytest

from bci_affect.cli import main
from bci_affect.core import ConfigError, StreamInfo
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.models.finetune import predict
from bci_affect.models.teacher import class_names
from bci_affect.training.model_io import load_model

from .sessions import eeg_info


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train", *argv])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(sim_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "m1"
    rc, stdout, stderr = _run(
        "--dataset", str(sim_dataset), "--out", str(out), "--epochs", "2", "--line-freq", "60"
    )
    assert rc == 0, stderr
    return out, stdout, stderr


def test_train_writes_a_model_that_names_its_stream(trained):
    out, _, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.safetensors"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    umask = os.umask(0o022)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in out.iterdir())
    doc = json.loads((out / "config.json").read_text())
    cfg, meta = doc["config"], doc["metadata"]
    # montage-free by default: the student reads the virtual 10-20 sites, any rate
    assert cfg["eeg_inputs"] == "sites" and cfg["eeg_ch_names"] == list(VIRTUAL_SITES)
    assert cfg["sfreq"] is None and cfg["n_times"] is None
    assert len(cfg["face_ch_names"]) == 160
    assert doc["class_names"] == list(class_names("quadrant"))
    feats = meta["features"]
    assert feats["window_s"] == 4.0 and feats["hop_s"] == 0.5 and feats["sfreq"] == 250.0
    assert feats["signals"]["preprocess"]["notch_hz"] == 60.0
    assert feats["bands"] == ["delta", "theta", "alpha", "beta", "gamma"]
    assert meta["dataset"]["n_sessions"] == 3 and meta["split"]["unit"] == "trial"
    assert {"bci_affect", "torch", "numpy", "python"} <= set(meta["versions"])
    rows = meta["metrics"]["val"]["rows"]
    assert set(rows) == {
        "fused",
        "teacher",
        "student",
        "student_via_teacher_head",
        "majority",
        "logistic",
        "chance",
    }
    assert rows["chance"]["accuracy"] == 0.25
    for row in rows.values():
        assert {"accuracy", "macro_f1", "accuracy_emg_clean", "n_emg_clean"} <= set(row)


def test_train_prints_progress_and_a_table_with_baselines(trained):
    _, stdout, stderr = trained
    assert "[1/3] loaded sub-01/ses-01" in stderr and "[3/3] loaded sub-03/ses-01" in stderr
    assert "epoch 1/2:" in stderr and "epoch 2/2:" in stderr
    for row in (
        "fused (face + EEG)",
        "teacher only (face)",
        "student only (EEG)",
        "majority class",
        "logistic regr. (band DE)",
        "chance (uniform guess)",
    ):
        assert stdout.count(row) == 2, row  # once for train, once for val
    assert "EMG-clean acc" in stdout and "wrote " in stdout


def test_the_model_loads_and_scores_windows(trained, sim_windows):
    out, _, _ = trained
    m = load_model(out, eeg=eeg_info(), window_s=4.0, label_scheme="quadrant")
    assert m.signals.window.window_s == 4.0 and m.signals.preprocess.notch_hz == 60.0
    assert bool(m.model.calibrated) and m.model.conformal is not None
    res = predict(m.model, sim_windows.montage_free().batch(np.arange(50)))
    probs = res.probs.numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert res.prediction_sets is not None


def test_an_existing_model_is_not_replaced_without_overwrite(trained, sim_dataset, tmp_path):
    out, _, _ = trained
    before = (out / "weights.safetensors").read_bytes()
    rc, _, err = _run("--dataset", str(sim_dataset), "--out", str(out), "--epochs", "1")
    assert rc == 2 and "already exists; pass --overwrite" in err
    assert (out / "weights.safetensors").read_bytes() == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    rc, _, err = _run(
        "--dataset", str(sim_dataset), "--out", str(tmp_path / "notes"), "--overwrite"
    )
    assert rc == 2 and "is not a model folder" in err
    assert (tmp_path / "notes" / "a.txt").read_text() == "x"


def test_overwrite_with_another_scheme_and_json(sim_dataset, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an old, broken model folder
    rc, stdout, err = _run(
        "--dataset",
        str(sim_dataset / "sub-01"),
        "--out",
        str(out),
        "--labels",
        "valence",
        "--epochs",
        "1",
        "--line-freq",
        "60",
        "--overwrite",
        "--json",
        "--val-fraction",
        "0.3",
    )
    assert rc == 0, err
    report = json.loads(stdout)
    assert report["model"] == str(out) and report["mode"] == "train"
    assert report["dataset"]["n_sessions"] == 1
    assert set(report["metrics"]) == {"train", "val"}
    doc = json.loads((out / "config.json").read_text())
    assert doc["class_names"] == ["low_valence", "high_valence"]


def test_bad_arguments_are_one_line_errors(sim_dataset, tmp_path):
    rc, _, err = _run("--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "m"))
    assert rc == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _run("--dataset", str(tmp_path / "empty"), "--out", str(tmp_path / "m"))
    assert rc == 2 and "holds no .xdf session" in err
    rc, _, err = _run(
        "--dataset", str(sim_dataset), "--out", str(tmp_path / "m"), "--init", str(tmp_path)
    )
    assert rc == 2 and "not a bci-affect checkpoint" in err
    assert len(err.strip().splitlines()) == 1


def test_init_finetunes_and_reports_before_and_after(trained, sim_dataset, tmp_path):
    base, _, _ = trained
    out = tmp_path / "personal"
    rc, stdout, err = _run(
        "--dataset",
        str(sim_dataset / "sub-03"),
        "--init",
        str(base),
        "--out",
        str(out),
        "--epochs",
        "2",
    )
    assert rc == 0, err
    assert "val_before" in stdout and "train_before" in stdout
    doc = json.loads((out / "config.json").read_text())
    assert doc["metadata"]["mode"] == "finetune" and doc["metadata"]["init"] == str(base)
    # windows and filters come from the starting model
    assert doc["metadata"]["features"]["signals"]["preprocess"]["notch_hz"] == 60.0
    rc, _, err = _run(
        "--dataset",
        str(sim_dataset),
        "--init",
        str(base),
        "--out",
        str(tmp_path / "x"),
        "--window",
        "2",
    )
    assert rc == 2 and "--window cannot be set with --init" in err


@pytest.mark.lsl
def test_loading_refuses_a_live_stream_it_does_not_fit(trained, uid):
    """The refusal goes through the StreamInfo of a real LSL stream, resolved on localhost."""
    from acquisition.lsl import Outlet, from_lsl_info

    out, _, _ = trained

    def live_info(ch_names, sfreq):
        info = StreamInfo(
            f"EEG-{uid}",
            "EEG",
            sfreq,
            tuple(ch_names),
            ("microvolts",) * len(ch_names),
            f"{uid}-{sfreq:g}",
            "float32",
        )
        outlet = Outlet(info)
        try:
            deadline = time.monotonic() + 10
            found = []
            while not found and time.monotonic() < deadline:
                found = pylsl.resolve_byprop("source_id", info.source_id, timeout=1.0)
            assert found, "the outlet never appeared"
            inlet = pylsl.StreamInlet(found[0])
            try:
                return from_lsl_info(inlet.info(timeout=5.0))
            finally:
                inlet.close_stream()
        finally:
            outlet.close()

    # a montage-free model fits any montage and rate with known scalp positions ...
    other_montage = live_info(("Fz", "Cz", "Pz", "Oz", "C3", "C4", "O1", "O2"), 500.0)
    assert load_model(out, eeg=other_montage).model.config.montage_free
    # ... and refuses labels without one, naming --montage
    nowhere = live_info(tuple(f"EXG Channel {i}" for i in range(8)), 250.0)
    with pytest.raises(ConfigError, match="no scalp position.*--montage"):
        load_model(out, eeg=nowhere)
    with pytest.raises(ConfigError, match="trained on 4 s windows, not 2 s"):
        load_model(out, window_s=2.0)
