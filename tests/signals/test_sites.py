"""Montage-free EEG features: virtual-site DE normalised with the session's own statistics."""

from __future__ import annotations

import numpy as np
import pytest

from bci_affect.core import ConfigError
from bci_affect.dsp.montage import VIRTUAL_SITES
from bci_affect.processors import SignalPipeline, SignalsConfig, process_recording
from bci_affect.processors.sites import SiteFeatures

NAMES = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")


def test_live_and_offline_give_the_same_normalised_site_features(sig, rng):
    eeg = sig.make_eeg(rng, seconds=30)
    cfg = SignalsConfig.make(line_hz=50.0)
    offline = process_recording(eeg, None, cfg)
    pipe = SignalPipeline(cfg)
    live = []
    for c in sig.split_every(eeg, 0.3):
        live += pipe(c)
    live += pipe.flush()
    assert len(live) == len(offline) > 40
    a = np.stack([r.features.sites for r in offline])
    b = np.stack([r.features.sites for r in live])
    assert a.shape == (len(offline), len(VIRTUAL_SITES), 5)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert np.isfinite(a[1:]).all()


def test_normalisation_is_causal_and_removes_a_session_offset(rng):
    """A window's value never depends on later windows, and a constant offset of a whole
    session (another amplifier gain, skull) disappears after the first windows."""
    de = rng.normal(2.0, 0.3, (200, len(NAMES), 5))
    norm, shifted = SiteFeatures(), SiteFeatures()
    z = np.stack([norm(x, NAMES, 1.0) for x in de])
    z_shift = np.stack([shifted(x + 1.7, NAMES, 1.0) for x in de])
    np.testing.assert_allclose(z[1:], z_shift[1:], atol=1e-5)  # offset gone (nats)
    late = de.copy()
    late[100:] += 5.0  # the future changes ...
    future = SiteFeatures()
    z_late = np.stack([future(x, NAMES, 1.0) for x in late])
    np.testing.assert_array_equal(z[:100], z_late[:100])  # ... the past does not
    # once the statistics settle, the z-scores have about unit spread
    assert 0.7 < float(z[50:].std()) < 1.3


def test_bad_windows_do_not_move_the_statistics(rng):
    de = rng.normal(2.0, 0.3, (50, len(NAMES), 5))
    clean, dirty = SiteFeatures(), SiteFeatures()
    for i, x in enumerate(de):
        clean(x, NAMES, 1.0)
        dirty(x, NAMES, 1.0)
        if i % 5 == 0:
            dirty(x + 50.0, NAMES, 0.1)  # an artifact window: normalised, not learnt from
    np.testing.assert_allclose(clean(de[0], NAMES, 1.0), dirty(de[0], NAMES, 1.0), atol=1e-6)


def test_a_montage_without_positions_gives_none(caplog):
    sites = SiteFeatures()
    assert sites(np.zeros((4, 5)), ("EEG1", "EEG2", "EEG3", "EEG4"), 1.0) is None
    assert "no montage-free EEG features" in caplog.text
    with pytest.raises(ConfigError, match="prior_sd"):
        SiteFeatures(prior_sd=0.0)


def test_a_session_without_a_good_window_is_normalised_with_all_its_windows(rng):
    """A board whose every window is flagged (muscle) still gets features, from the second
    window on: the statistics of all windows stand in until a good one comes."""
    de = rng.normal(2.0, 0.3, (20, len(NAMES), 5))
    sites = SiteFeatures()
    z = np.stack([sites(x, NAMES, 0.1) for x in de])
    assert np.isfinite(z[1:]).all() and (z[0] == 0).all()
    good = sites(de[0], NAMES, 0.9)  # the first good window becomes the baseline
    np.testing.assert_array_equal(good, np.zeros_like(good))
