import numpy as np
import pylsl
import pytest

from acquisition.lsl import Outlet, from_lsl_info, to_lsl_info
from bci_affect.core import Chunk, StreamInfo

pytestmark = pytest.mark.lsl


def test_info_round_trip_keeps_labels_and_units():
    info = StreamInfo("EEG", "EEG", 250.0, ("Fp1", "O2"), ("microvolts",) * 2, "x1", "float32")
    back = from_lsl_info(to_lsl_info(info))
    assert back == info


def test_outlet_pushes_per_sample_timestamps(uid):
    info = StreamInfo(f"T{uid}", "EEG", 100.0, ("a", "b"), source_id=uid)
    out = Outlet(info)
    (found,) = pylsl.resolve_byprop("source_id", uid, timeout=5)
    inlet = pylsl.StreamInlet(found)
    inlet.open_stream(timeout=5)
    assert out.wait_for_consumers(5)
    t0 = pylsl.local_clock()
    chunk = Chunk(np.arange(20, dtype=np.float32).reshape(2, 10), t0 + np.arange(10) / 100, info)
    out.push(chunk)
    got, ts = [], []
    while len(got) < 10:
        s, t = inlet.pull_chunk(timeout=2.0)
        assert s, "no samples arrived"
        got += s
        ts += t
    np.testing.assert_allclose(np.array(got).T, chunk.data)
    np.testing.assert_allclose(ts, chunk.times, atol=1e-6)
    assert from_lsl_info(inlet.info()).ch_names == ("a", "b")
