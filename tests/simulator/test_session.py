"""Simulated sessions on disk: the streams `record` writes, markers, sidecar, determinism."""

from __future__ import annotations

import inspect
import json
import re
import warnings

import numpy as np
import pytest
import pyxdf

from acquisition.face_features import face_features_info
from acquisition.recorder import SIDECAR_VERSION, sidecar_path
from acquisition.simulator import (
    SimulatorConfig,
    simulate_dataset,
    simulate_session,
    write_session,
)
from acquisition.simulator.config import CYTON_MONTAGE
from acquisition.xdf import RecordingWarning, load_xdf
from acquisition.xdf_writer import write_xdf
from bci_affect.cli import main
from bci_affect.core.errors import ConfigError

STREAMS = ["EEG", "EEG-events", "FaceFeatures", "FaceFeatures-events", "Markers"]


def _load(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecordingWarning)  # NaN face features, as live
        return {c.name: c for c in load_xdf(path)}


def test_loads_with_load_xdf_like_a_recording(written, short_session):
    chunks = _load(written)
    assert list(chunks) == STREAMS
    eeg = chunks["EEG"]
    assert eeg.info.type == "EEG" and eeg.sfreq == 250.0
    assert eeg.ch_names == CYTON_MONTAGE
    assert set(eeg.info.units) == {"microvolts"}
    assert eeg.info.channel_format == "float32"
    np.testing.assert_allclose(np.diff(eeg.times), 1 / 250.0, rtol=1e-6)
    live = face_features_info()
    face = chunks["FaceFeatures"]
    assert (face.info.name, face.info.type, face.sfreq) == (live.name, live.type, 0.0)
    assert face.ch_names == live.ch_names and face.info.units == live.units
    assert face.info.channel_format == live.channel_format
    assert np.all(np.diff(face.times) > 0)
    frame_dt = np.median(np.diff(face.times))
    assert frame_dt == pytest.approx(1 / 30, rel=0.02)
    for name in ("EEG-events", "FaceFeatures-events", "Markers"):
        info = chunks[name].info
        assert (info.type, info.ch_names, info.channel_format) == ("Markers", ("event",), "string")
    # samples are those simulated, bit for bit
    np.testing.assert_array_equal(eeg.data, short_session.chunk("EEG").data)
    np.testing.assert_array_equal(face.data, short_session.chunk("FaceFeatures").data)


def test_pyxdf_reads_the_same_streams(written):
    streams, header = pyxdf.load_xdf(str(written), dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    assert sorted(by_name) == sorted(STREAMS)
    eeg = by_name["EEG"]
    assert float(eeg["info"]["nominal_srate"][0]) == 250.0
    labels = [c["label"][0] for c in eeg["info"]["desc"][0]["channels"][0]["channel"]]
    assert labels == list(CYTON_MONTAGE)
    assert eeg["time_series"].shape[1] == 8
    assert by_name["FaceFeatures"]["time_series"].shape[1] == len(face_features_info().ch_names)
    assert header["info"]["datetime"][0] == "2024-01-01T09:00:00+0000"
    markers = [m[0] for m in by_name["Markers"]["time_series"]]
    assert json.loads(markers[0])["event"] == "session_start"


def test_marker_schema_and_ratings_match_the_ground_truth(written, short_session):
    chunks = _load(written)
    markers = chunks["Markers"]
    events = [json.loads(s) for s in markers.data[0]]
    assert np.all(np.diff(markers.times) >= 0)
    start = events[0]
    assert start["event"] == "session_start" and start["seed"] == 11
    assert start["subject"] == "sub-01" and start["session"] == "ses-01"
    assert events[-1] == {"event": "session_end"}
    body = events[1:-1]
    truth = json.loads(sidecar_path(written).read_text())["ground_truth"]["trials"]
    assert len(body) == 3 * len(truth) == 3 * 8
    for k, trial in enumerate(truth):
        ts, rating, te = body[3 * k : 3 * k + 3]
        n = trial["trial"]
        assert ts == {"event": "trial_start", "trial": n, "stimulus": trial["stimulus"]}
        assert rating == {
            "event": "rating",
            "trial": n,
            "valence": trial["rating_valence"],
            "arousal": trial["rating_arousal"],
        }
        assert te == {"event": "trial_end", "trial": n}
        assert all(
            isinstance(rating[k], int) and 1 <= rating[k] <= 9 for k in ("valence", "arousal")
        )
        t_start, t_rating, t_end = markers.times[1 + 3 * k : 4 + 3 * k]
        assert t_start == pytest.approx(trial["start"]) and t_end == pytest.approx(trial["end"])
        assert t_start < t_rating <= t_end
        assert t_end - t_start >= 10.0
    assert [t.trial for t in short_session.schedule.trials] == list(range(1, 9))


def test_sidecar_like_record_plus_ground_truth(written, short_config):
    doc = json.loads(sidecar_path(written).read_text())
    assert doc["format"] == "bci-affect recording sidecar"
    assert doc["format_version"] == SIDECAR_VERSION
    assert (doc["file"], doc["status"], doc["subject"], doc["session"]) == (
        "ses-01.xdf",
        "complete",
        "sub-01",
        "ses-01",
    )
    assert doc["montage"] == ",".join(CYTON_MONTAGE)
    assert doc["software"]["bci_affect"]
    assert SimulatorConfig.from_dict(doc["config"]) == short_config
    assert doc["simulator"]["seed"] == 11
    assert doc["size_bytes"] == written.stat().st_size
    chunks = _load(written)
    for entry in doc["streams"]:
        assert entry["n_samples"] == chunks[entry["name"]].n_times
        assert entry["ch_names"] == list(chunks[entry["name"]].ch_names)
    truth = doc["ground_truth"]
    assert set(truth["subject"]) >= {"iaf_hz", "responder", "faa_effect", "poker_face"}
    assert {"face_lost", "occlusions", "expression_episodes"} <= set(truth["face"])
    assert doc["duration_s"] == pytest.approx(
        chunks["EEG"].times[-1] - chunks["EEG"].times[0], abs=0.01
    )


def _masked(path):
    """File bytes with the stream uids blanked (a writer without fixed uids draws them)."""
    return re.sub(rb"<uid>[^<]*</uid>", b"<uid></uid>", path.read_bytes())


def test_same_seed_same_bytes_different_seed_different_data(short_config, tmp_path):
    a = tmp_path / "a" / "ses-01.xdf"
    b = tmp_path / "b" / "ses-01.xdf"
    c = tmp_path / "c" / "ses-01.xdf"
    write_session(simulate_session(short_config, seed=5, subject_index=2), a)
    write_session(simulate_session(short_config, seed=5, subject_index=2), b)
    write_session(simulate_session(short_config, seed=6, subject_index=2), c)
    assert _masked(a) == _masked(b)
    if "uids" in inspect.signature(write_xdf).parameters:  # a writer with reproducible uids
        assert a.read_bytes() == b.read_bytes()
    assert sidecar_path(a).read_bytes() == sidecar_path(b).read_bytes()
    ea, ec = _load(a)["EEG"], _load(c)["EEG"]
    assert ea.times[0] == ec.times[0] == short_config.session.start_time_s  # fixed start
    n = min(ea.n_times, ec.n_times)
    assert not np.array_equal(ea.data[:, :n], ec.data[:, :n])
    assert _load(a)["Markers"].data.tolist() != _load(c)["Markers"].data.tolist()


def test_subjects_are_independent_of_the_dataset_size(short_config):
    a = simulate_session(short_config, seed=3, subject_index=2, n_subjects=2)
    b = simulate_session(short_config, seed=3, subject_index=2, n_subjects=9)
    assert a.subject == b.subject
    np.testing.assert_array_equal(a.chunk("EEG").data, b.chunk("EEG").data)
    other = simulate_session(short_config, seed=3, subject_index=3)
    assert other.subject != a.subject


def test_dataset_layout_progress_and_no_silent_overwrite(short_config, tmp_path):
    seen = []
    paths = simulate_dataset(2, tmp_path, seed=1, config=short_config, progress=seen.append)
    assert paths == [tmp_path / "sub-01" / "ses-01.xdf", tmp_path / "sub-02" / "ses-01.xdf"]
    assert all(p.is_file() and sidecar_path(p).is_file() for p in paths)
    assert [s.index for s in seen] == [1, 2] and seen[0].size_bytes == paths[0].stat().st_size
    before = paths[0].read_bytes()
    with pytest.raises(ConfigError, match="already exists.*--overwrite"):
        simulate_dataset(2, tmp_path, seed=2, config=short_config)
    assert paths[0].read_bytes() == before
    simulate_dataset(1, tmp_path, seed=2, config=short_config, overwrite=True)
    assert paths[0].read_bytes() != before
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="number of subjects"):
            simulate_dataset(bad, tmp_path, config=short_config)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        simulate_dataset(1, tmp_path, seed=-3, config=short_config)


def test_cli_writes_sessions_and_prints_progress(tmp_path, capsys):
    cfg = tmp_path / "short.toml"
    cfg.write_text(
        "[session]\nn_trials = 4\ntrial_s = [8.0, 9.0]\nrest_s = [2.0, 3.0]\nlead_in_s = 2.0\n"
        "rating_s = 1.0\n",
        encoding="utf-8",
    )
    out = tmp_path / "data"
    args = ["simulate", "--subjects", "2", "--out", str(out), "--seed", "4", "--config", str(cfg)]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("[1/2] sub-01: 4 trials") and lines[1].startswith("[2/2] sub-02")
    assert "2 sessions in" in lines[-1]
    doc = json.loads((out / "sub-02" / "ses-01.json").read_text())
    assert doc["simulator"] == {"generator": "bci-affect simulate", "seed": 4, "subject_index": 2}
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
