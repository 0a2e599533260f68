"""The foundation end to end, with real parts only: BrainFlow's synthetic board published on
LSL by ``bci-affect stream``, recorded by ``bci-affect record`` (labrecorder), then replayed."""

import json
import subprocess
import sys

import numpy as np
import pytest

from acquisition.files import open_recording
from acquisition.xdf import load_xdf
from bci_affect.cli import main
from bci_affect.core import read_all

pytestmark = [pytest.mark.lsl, pytest.mark.slow]

MONTAGE = "Fp1,Fp2,C3,C4,P7,P8,O1,O2,F3,F4,F7,F8,T7,T8,Pz,Cz"


def test_synthetic_board_stream_record_replay(tmp_path, uid, capsys):
    out = tmp_path / "S01" / "ses-01.xdf"
    # The board runs in its own process, as it would beside a recorder in a lab.
    board = subprocess.Popen(
        [sys.executable, "-m", "bci_affect", "stream", "--board", "synthetic",
         "--montage", MONTAGE, "--source-id", uid, "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "publishing 'EEG'" in board.stdout.readline()  # the outlet exists now
        rc = main(
            ["record", "--out", str(out), "--streams", f"source_id={uid}",
             f"source_id={uid}:accel", "--duration", "4", "--board", "synthetic",
             "--montage", MONTAGE]
        )  # fmt: skip
        assert rc == 0, capsys.readouterr().err
    finally:
        board.terminate()
        board.wait(timeout=30)

    streams = {c.name: c for c in load_xdf(out)}
    eeg = streams["EEG"]
    assert eeg.ch_names == tuple(MONTAGE.split(","))
    assert set(eeg.info.units) == {"microvolts"}
    assert eeg.sfreq == 250.0
    assert 3.0 <= eeg.times[-1] - eeg.times[0] <= 5.5
    steps = np.diff(eeg.times)
    np.testing.assert_allclose(np.median(steps), 1 / 250, rtol=2e-3)
    assert steps.min() > 0 and steps.max() < 3 / 250  # no gaps that were not in the stream
    assert streams["EEG-accel"].ch_names == ("AccX", "AccY", "AccZ")

    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["subject"] == "S01" and sidecar["session"] == "ses-01"
    assert sidecar["status"] == "complete"

    # Replay in process through the one source interface gives exactly the recorded samples.
    with open_recording(out) as source:
        replayed = read_all(source)
    np.testing.assert_array_equal(replayed["EEG"].data, eeg.data)
    np.testing.assert_array_equal(replayed["EEG"].times, eeg.times)
