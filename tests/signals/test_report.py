"""Per-window JSON records and the quality / band-power plot of ``inspect``."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from bci_affect.core import Chunk, ConfigError, StreamInfo
from bci_affect.processors import SignalsConfig, process_recording
from bci_affect.signals_report import format_windows, plot_signals, window_records

CFG = SignalsConfig.make(line_hz=50.0)
CHANNEL_KEYS = {
    "name",
    "flat",
    "railed",
    "line_noise",
    "muscle",
    "bad",
    "line_ratio",
    "emg_rms_uv",
    "band_power_uv2",
    "relative_power",
    "de",
}


def _eeg_with_gap(sig, rng) -> Chunk:
    eeg = sig.make_eeg(rng, seconds=12, dtype=np.float64)
    x = eeg.data.copy()
    x[7] = 0.25  # flat
    keep = np.ones(eeg.n_times, bool)
    keep[1500:1600] = False
    return replace(eeg, data=x[:, keep], times=eeg.times[keep])


def test_records_are_json_lines_with_the_documented_fields(sig, rng):
    eeg = _eeg_with_gap(sig, rng)
    records = list(window_records(eeg, CFG))
    results = process_recording(eeg, None, CFG)
    assert len(records) == len(results) > 10
    for rec, res in zip(records, results, strict=True):
        line = json.dumps(rec, allow_nan=False)  # valid JSON: NaN became null
        assert json.loads(line) == rec
        assert rec["t_end"] == pytest.approx(res.t_end)
        assert rec["t_rel"] == pytest.approx(res.t_end - eeg.times[0])
        assert rec["window_s"] == 4.0
        assert rec["bad_channels"] == ["O2"]
        assert len(rec["channels"]) == 8
        assert [c["name"] for c in rec["channels"]] == list(eeg.ch_names)
        for c in rec["channels"]:
            assert set(c) == CHANNEL_KEYS
            assert list(c["band_power_uv2"]) == ["delta", "theta", "alpha", "beta", "gamma"]
        o2 = rec["channels"][7]
        assert o2["flat"] and o2["bad"] and o2["band_power_uv2"]["alpha"] is None
        if rec["complete"]:
            assert rec["gaps"] == [] and rec["eeg_coverage"] == 1.0
            assert 0 < rec["quality"] <= 1
            fp1 = rec["channels"][0]
            power = float(res.features.power[0, 2])
            assert fp1["band_power_uv2"]["alpha"] == pytest.approx(power, rel=1e-5)
            assert sum(fp1["relative_power"].values()) == pytest.approx(1.0, rel=1e-4)
            assert math.isfinite(rec["faa"])  # Fp1/Fp2
        else:
            assert rec["quality"] == 0.0 and len(rec["gaps"]) == 1
            assert rec["channels"][0]["de"]["alpha"] is None
            assert 0.8 < rec["eeg_coverage"] < 1.0
    assert any(not r["complete"] for r in records) and any(r["complete"] for r in records)
    assert "face_coverage" not in records[0]


def test_records_with_a_face_stream(sig, rng):
    eeg = sig.make_eeg(rng, seconds=8)
    ft = eeg.times[0] + np.arange(0, 8, 0.04)
    face = Chunk(
        np.ones((2, ft.size)),
        ft,
        StreamInfo("FaceFeatures", "FaceFeatures", 0.0, ("face_present", "quality")),
    )
    rec = next(window_records(eeg, CFG, face=face))
    assert rec["face_frames"] == 100 and rec["face_coverage"] == pytest.approx(1.0, abs=0.02)
    assert rec["face_gap"] is False


def test_plot(sig, rng, tmp_path):
    eeg = _eeg_with_gap(sig, rng)
    records = list(window_records(eeg, CFG))
    out = plot_signals(eeg, records, tmp_path / "signals.png", config=CFG)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with pytest.raises(ConfigError, match="does not exist"):
        plot_signals(eeg, records, tmp_path / "missing" / "x.png")


def test_bad_input_is_a_clear_error(sig, rng):
    markers = Chunk(
        np.array([["{}"]], dtype=object),
        np.array([1.0]),
        StreamInfo("Markers", "Markers", 0.0, ("event",), channel_format="string"),
    )
    with pytest.raises(ConfigError, match="not a regular numeric stream"):
        list(window_records(markers))
    eeg = sig.make_eeg(rng, seconds=2)  # shorter than one window
    assert list(window_records(eeg, CFG)) == []


def test_table_for_people(sig, rng):
    eeg = _eeg_with_gap(sig, rng)
    records = list(window_records(eeg, CFG))
    lines = format_windows(records).splitlines()
    assert lines[0].split()[:4] == ["t_end", "s", "quality", "blink"]
    assert len(lines) == len(records) + 1
    assert sum("gap (" in line for line in lines) == sum(not r["complete"] for r in records)
    assert lines[1].split()[0] == "4.00" and lines[1].endswith("O2")
