"""Labelled windows from XDF sessions: trials, ratings, label schemes, windows inside trials,
and features identical to the live pipeline's."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest

from bci_affect.core import Chunk, ConfigError, StreamNotFoundError
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.models.teacher import class_names
from bci_affect.processors import SignalPipeline, SignalsConfig
from bci_affect.training.dataset import (
    DatasetConfig,
    WindowDataset,
    build_dataset,
    session_windows,
)
from bci_affect.training.inputs import (
    emg_score_from_muscle,
    signals_config_from_dict,
    signals_config_to_dict,
    window_arrays,
)
from bci_affect.training.markers import parse_trials, pick_session_streams

from .sessions import load_streams, markers_info, trial_markers, write_session

# trial 1: 105-115 s, valence 7 / arousal 3 (high V, low A); trial 2: 118-128 s, rating
# without a trial number (belongs to the trial that started last), valence 2 / arousal 8;
# trial 3: 131-139 s, never rated
TRIALS = [
    (1, 105.0, 115.0, {"valence": 7, "arousal": 3}),
    (2, 118.0, 128.0, None),
    (3, 131.0, 139.0, None),
]
SIGNALS = SignalsConfig.make(line_hz=50.0)


@pytest.fixture(scope="module")
def session_path(tmp_path_factory):
    markers = trial_markers(TRIALS)
    markers.append((126.0, {"event": "rating", "valence": 2, "arousal": 8}))
    markers.append((110.0, "not json: a free-text annotation"))
    markers.sort(key=lambda m: m[0])
    path = tmp_path_factory.mktemp("hand") / "sub-07" / "ses-01.xdf"
    path.parent.mkdir()
    return write_session(path, markers)


@pytest.fixture(scope="module")
def streams(session_path):
    return load_streams(session_path)


def test_windows_lie_inside_rated_trials_and_keep_their_trial(streams):
    ds = session_windows(streams, DatasetConfig(signals=SIGNALS), session="sub-07/ses-01")
    assert isinstance(ds, WindowDataset)
    # the grid: windows end at 104 + 0.5 k; trial 1 holds ends 109..115, trial 2 ends 122..128
    assert sorted(set(ds.trial.tolist())) == [1, 2]  # trial 3 has no rating
    for trial, start, end, _ in TRIALS[:2]:
        t_end = ds.t_end[ds.trial == trial]
        np.testing.assert_allclose(t_end, np.arange(start + 4.0, end + 0.25, 0.5), atol=1e-6)
        assert np.all(t_end - ds.window_s >= start - 1e-6) and np.all(t_end <= end + 1e-6)
    assert len(ds) == 26 and ds.n_trials == 2
    assert set(ds.session) == {"sub-07/ses-01"} and set(ds.subject) == {"sub-07/ses-01"}
    assert ds.eeg_de.shape == (26, 8, 5) and np.isfinite(ds.eeg_de).all()
    assert ds.face.shape[0] == 26 and ds.face.shape[2] == 160 and ds.face_mask.any(axis=1).all()
    assert ds.eeg_raw.shape == (26, 8, 1000)  # SIGNALS keeps the tensor
    assert ds.n_times == 1000 and ds.sfreq == 250.0 and ds.window_s == 4.0


@pytest.mark.parametrize(
    ("scheme", "trial1", "trial2"),
    [
        ("quadrant", "HVLA", "LVHA"),
        ("valence", "high_valence", "low_valence"),
        ("arousal", "low_arousal", "high_arousal"),
    ],
)
def test_labels_follow_the_ratings_in_each_scheme(streams, scheme, trial1, trial2):
    cfg = DatasetConfig(signals=SIGNALS, label_scheme=scheme)
    ds = session_windows(streams, cfg, session="s")
    names = class_names(scheme)
    assert ds.class_names == names
    assert {names[y] for y in ds.labels[ds.trial == 1]} == {trial1}
    assert {names[y] for y in ds.labels[ds.trial == 2]} == {trial2}
    np.testing.assert_array_equal(ds.valence[ds.trial == 2], 2.0)
    # relabelling from the stored ratings gives what building with that scheme gives
    other = session_windows(streams, DatasetConfig(signals=SIGNALS), session="s")
    np.testing.assert_array_equal(other.relabel(scheme).labels, ds.labels)


def test_threshold_and_skip_start(streams):
    high = session_windows(
        streams,
        DatasetConfig(signals=SIGNALS, label_scheme="valence", rating_threshold=7.0),
        session="s",
    )
    assert set(high.labels.tolist()) == {0}  # 7 is not above 7
    skip = session_windows(streams, DatasetConfig(signals=SIGNALS, skip_start_s=2.0), session="s")
    assert len(skip) == 26 - 2 * 4
    starts = {1: 105.0, 2: 118.0}
    assert all(
        t - 4.0 >= starts[tr] + 2.0 - 1e-6 for t, tr in zip(skip.t_end, skip.trial, strict=True)
    )


def test_features_equal_the_live_pipeline(streams):
    """The offline dataset and SignalPipeline fed small chunks give the same model inputs."""
    cfg = DatasetConfig(signals=SIGNALS)
    ds = session_windows(streams, cfg, session="s")
    live = SignalPipeline(SIGNALS)
    pieces = []
    for name in ("EEG", "FaceFeatures"):
        c = streams[name]
        edges = np.arange(c.times[0], c.times[-1] + 0.37, 0.37)
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            pieces.append(c.slice_times(lo, hi))
    pieces.sort(key=lambda c: c.times[-1] if c.n_times else 0.0)
    results = [r for p in pieces for r in live(p)] + live.flush()
    by_end = {round(r.t_end, 6): r for r in results}
    picked = [by_end[round(t, 6)] for t in ds.t_end]
    arrays = window_arrays(picked, n_frames=ds.face.shape[1], eeg_raw=True)
    np.testing.assert_allclose(arrays["eeg_de"], ds.eeg_de, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(arrays["eeg_raw"], ds.eeg_raw, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(arrays["emg_score"], ds.emg_score, rtol=1e-4)
    np.testing.assert_allclose(arrays["eeg_quality"], ds.eeg_quality, rtol=1e-4)
    np.testing.assert_array_equal(arrays["face_mask"], ds.face_mask)
    np.testing.assert_array_equal(arrays["face"][ds.face_mask], ds.face[ds.face_mask])


def test_sessions_join_and_subjects_come_from_the_caller(session_path, streams):
    cfg = DatasetConfig(signals=replace(SIGNALS, features=replace(SIGNALS.features, tensor=False)))
    seen = []
    ds = build_dataset(
        [("a/ses-01", streams), ("b/ses-01", streams)],
        cfg,
        subjects={"a/ses-01": "a"},
        progress=lambda name, part: seen.append((name, len(part))),
    )
    assert seen == [("a/ses-01", 26), ("b/ses-01", 26)]
    assert len(ds) == 52 and ds.n_trials == 4 and ds.eeg_raw is None
    assert ds.sessions == ("a/ses-01", "b/ses-01")
    assert set(ds.subject[ds.session == "a/ses-01"]) == {"a"}
    assert set(ds.subject[ds.session == "b/ses-01"]) == {"b/ses-01"}
    assert len(set(ds.trial_keys)) == 4
    assert ds.summary()["class_counts"] == {"LVLA": 0, "LVHA": 26, "HVLA": 26, "HVHA": 0}
    sub = ds.subset(ds.session == "b/ses-01")
    assert len(sub) == 26 and sub.face.shape[1:] == ds.face.shape[1:]


def test_sessions_of_other_montages_join_on_the_virtual_montage(tmp_path, streams):
    other = write_session(
        tmp_path / "o.xdf", trial_markers(TRIALS[:1]), ch_names=("Fz", "Cz", "Pz", "Oz")
    )
    one = build_dataset([("s", streams)], DatasetConfig(signals=SIGNALS))
    both = build_dataset(
        [("s", streams), ("o", load_streams(other))], DatasetConfig(signals=SIGNALS)
    )
    assert both.eeg_ch_names == VIRTUAL_SITES and both.eeg_raw is None
    assert both.eeg_de.shape[1:] == (len(VIRTUAL_SITES), len(both.bands))
    np.testing.assert_array_equal(both.eeg_de[: len(one)], one.eeg_sites)
    assert np.isfinite(both.eeg_de).all(axis=(1, 2)).all()
    # a session whose labels have no scalp position cannot join: refused, naming the montage
    nowhere = write_session(
        tmp_path / "n.xdf", trial_markers(TRIALS[:1]), ch_names=("EEG1", "EEG2", "EEG3", "EEG4")
    )
    with pytest.raises(ConfigError, match="eeg_ch_names"):
        build_dataset(
            [("s", streams), ("n", load_streams(nowhere))], DatasetConfig(signals=SIGNALS)
        )


def test_no_rated_trial_is_a_clear_error(tmp_path):
    path = write_session(tmp_path / "x.xdf", trial_markers([(1, 105.0, 115.0, None)]))
    with pytest.raises(ConfigError, match="none of the 1 sessions has a window inside a rated"):
        build_dataset([("x", load_streams(path))], DatasetConfig(signals=SIGNALS))


def _markers(items):
    texts = [json.dumps(b) if isinstance(b, dict) else b for _, b in items]
    return Chunk(
        np.array([texts], dtype=object), np.array([t for t, _ in items], float), markers_info()
    )


def test_parse_trials_handles_the_mess_of_real_sessions(caplog):
    items = [
        (1.0, {"event": "session_start", "subject": "sub-01"}),
        (2.0, {"event": "trial_start", "trial": 1}),
        (5.0, {"event": "rating", "trial": 1, "valence": 6, "arousal": 2}),
        (6.0, {"event": "trial_end", "trial": 1}),
        (7.0, {"event": "trial_start", "trial": 1}),  # repeated number: left out
        (8.0, {"event": "trial_start"}),  # no number: numbered by order
        (9.0, {"event": "rating", "valence": 12, "arousal": 3}),  # out of range: unrated
        (10.0, {"event": "trial_start", "trial": 4}),  # closes the open trial
        (11.0, {"event": "rating", "valence": 3}),  # valence only
        (12.0, {"event": "trial_end"}),
        (13.0, {"event": "trial_start", "trial": 5}),  # never ends
        (14.0, "plain text"),
    ]
    with caplog.at_level(logging.WARNING):
        trials = parse_trials(_markers(items), session="S")
    assert [(t.trial, t.start, t.end) for t in trials] == [
        (1, 2.0, 6.0),
        (2, 8.0, 10.0),
        (4, 10.0, 12.0),
    ]
    assert (trials[0].valence, trials[0].arousal) == (6.0, 2.0)
    assert (trials[1].valence, trials[1].arousal) == (None, None)
    assert (trials[2].valence, trials[2].arousal) == (3.0, None)
    text = caplog.text
    for needle in ("starts a second time", "outside [1, 9]", "while trial 2 is open", "never ends"):
        assert needle in text
    assert all("S:" in r.getMessage() for r in caplog.records)


def test_stream_picking_ignores_event_streams_and_names_what_is_missing(streams):
    eeg, face, markers = pick_session_streams(streams)
    assert (eeg.name, face.name, markers.name) == ("EEG", "FaceFeatures", "Markers")
    no_markers = {k: v for k, v in streams.items() if k != "Markers"}
    with pytest.raises(
        StreamNotFoundError, match="no Markers stream with trial_start.*'EEG-events'"
    ):
        pick_session_streams(no_markers, session="sub-07")
    with pytest.raises(StreamNotFoundError, match="no EEG stream named 'X'"):
        pick_session_streams(streams, eeg="X")


def test_signals_config_round_trips_through_json():
    cfg = SignalsConfig.make(line_hz=60.0, window_s=2.0, hop_s=0.25, reference="average")
    back = signals_config_from_dict(json.loads(json.dumps(signals_config_to_dict(cfg))))
    assert back == cfg
    with pytest.raises(ConfigError, match="unknown keys"):
        signals_config_from_dict({"window": {"window_seconds": 3}})


def test_emg_score_maps_the_muscle_threshold_to_the_middle():
    e = emg_score_from_muscle([0.0, 1.0, 3.0, np.nan, -1.0])
    np.testing.assert_allclose(e[:3], [0.0, 0.5, 0.75])
    assert np.isnan(e[3]) and e[4] == 0.0
