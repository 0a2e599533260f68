"""Checkpoints: round trip, the mismatch refusal, broken files."""

import copy
import json

import pytest
import torch

from bci_affect.core.errors import ConfigError, FileFormatError
from bci_affect.models.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_compatible,
    load_checkpoint,
    read_checkpoint_config,
    save_checkpoint,
)
from bci_affect.models.finetune import fit_conformal, predict
from bci_affect.models.transfer import AffectModel

from .synthetic import EEG_CH_NAMES, FACE_CH_NAMES, make_windows


@pytest.fixture
def calibrated_model(trained, test_set):
    model = copy.deepcopy(trained[0])
    fit_conformal(model, test_set.batch.index(slice(0, 300)), test_set.labels[:300], coverage=0.9)
    return model


def test_round_trip_gives_identical_outputs(calibrated_model, test_set, tmp_path):
    folder = save_checkpoint(calibrated_model, tmp_path / "m", metadata={"subjects": ["S01"]})
    assert (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()
    loaded = load_checkpoint(folder, eeg_ch_names=EEG_CH_NAMES, face_ch_names=FACE_CH_NAMES)
    assert not loaded.training and bool(loaded.calibrated)
    assert loaded.conformal.to_dict() == calibrated_model.conformal.to_dict()
    batch = test_set.batch.index(slice(300, 500))
    calibrated_model.conformal = copy.deepcopy(loaded.conformal)  # same random state for APS
    a, b = predict(calibrated_model, batch), predict(loaded, batch)
    for name in (
        "teacher_logits",
        "student_logits",
        "probs",
        "alpha",
        "uncertainty",
        "z_eeg",
        "prediction_sets",
    ):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    config, doc = read_checkpoint_config(folder)
    assert config == calibrated_model.config
    assert doc["class_names"] == ["LVLA", "LVHA", "HVLA", "HVHA"] and doc["metadata"] == {
        "subjects": ["S01"]
    }


def test_raw_input_model_round_trip(tmp_path):
    torch.manual_seed(0)
    m = AffectModel(
        8,
        2,
        face_ch_names=FACE_CH_NAMES,
        eeg_ch_names=EEG_CH_NAMES,
        label_scheme="valence",
        eeg_inputs="both",
        n_times=256,
        sfreq=128.0,
    ).eval()
    d = make_windows(4, raw=True).batch
    save_checkpoint(m, tmp_path / "raw")
    loaded = load_checkpoint(tmp_path / "raw", sfreq=128.0, n_times=256, label_scheme="valence")
    with torch.inference_mode():
        assert torch.equal(m(d).student_logits, loaded(d).student_logits)
    assert loaded.conformal is None and not bool(loaded.calibrated)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eeg_ch_names": EEG_CH_NAMES[:-1]}, r"trained on EEG channels .* missing \['O2'\]"),
        ({"eeg_ch_names": (*EEG_CH_NAMES, "Cz")}, r"extra \['Cz'\]"),
        ({"eeg_ch_names": tuple(reversed(EEG_CH_NAMES))}, "same channels in another order"),
        ({"face_ch_names": FACE_CH_NAMES[:-1]}, r"FaceFeatures channels .* missing \['emb_15'\]"),
        ({"label_scheme": "arousal"}, "predicts the label scheme 'quadrant', not 'arousal'"),
    ],
)
def test_mismatch_with_the_stream_is_refused(model, tmp_path, kwargs, message):
    save_checkpoint(model, tmp_path / "m")
    with pytest.raises(ConfigError, match=message):
        load_checkpoint(tmp_path / "m", **kwargs)


def test_rate_and_window_mismatch_is_refused(tmp_path):
    m = AffectModel(
        8,
        4,
        face_ch_names=FACE_CH_NAMES,
        eeg_ch_names=EEG_CH_NAMES,
        eeg_inputs="raw",
        n_times=256,
        sfreq=128.0,
    )
    save_checkpoint(m, tmp_path / "m")
    with pytest.raises(ConfigError, match="trained on EEG at 128 Hz, the stream runs at 250 Hz"):
        load_checkpoint(tmp_path / "m", sfreq=250.0)
    with pytest.raises(ConfigError, match="windows of 256 samples, got 500"):
        load_checkpoint(tmp_path / "m", n_times=500)
    check_compatible(
        m.config, sfreq=128.0, n_times=256, eeg_ch_names=list(EEG_CH_NAMES)
    )  # no error


def test_broken_checkpoints_give_clear_errors(model, tmp_path):
    with pytest.raises(FileFormatError, match="not a bci-affect checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    folder = save_checkpoint(model, tmp_path / "m")
    (folder / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(FileFormatError, match="cannot read"):
        load_checkpoint(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(FileFormatError, match="incomplete"):
        load_checkpoint(folder)
    doc = json.loads((folder / CONFIG_FILE).read_text())
    doc["format_version"] = 99
    (folder / CONFIG_FILE).write_text(json.dumps(doc))
    with pytest.raises(FileFormatError, match="upgrade bci-affect"):
        load_checkpoint(folder)


def test_weights_that_do_not_fit_the_config_are_refused(model, tmp_path):
    folder = save_checkpoint(model, tmp_path / "m")
    other = AffectModel(8, 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES, embed_dim=16)
    save_checkpoint(other, tmp_path / "other")
    (folder / WEIGHTS_FILE).write_bytes((tmp_path / "other" / WEIGHTS_FILE).read_bytes())
    with pytest.raises(FileFormatError, match="do not fit"):
        load_checkpoint(folder)


def test_a_file_path_is_refused(model, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        save_checkpoint(model, tmp_path / "file")
