"""Channel labels -> the fixed virtual 10-20 montage (pure maths, MNE template)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bci_affect.core import ConfigError, ShapeError
from bci_affect.dsp.montage import (
    ALIASES,
    REASON_REFERENCE,
    REASON_UNKNOWN,
    VIRTUAL_SITES,
    MontageMap,
    canonical_label,
    montage_map,
    scalp_positions,
)

CYTON = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
DAISY = CYTON + ("F7", "F8", "F3", "F4", "T7", "T8", "P3", "P4")
MUSE = ("TP9", "AF7", "AF8", "TP10")
SYNTHETIC = ("Fz", "C3", "Cz", "C4", "Pz", "PO7", "Oz", "PO8")
SYNTHETIC += ("F5", "F7", "F3", "F1", "F2", "F4", "F6", "F8")
HOMOLOGOUS = [
    ("Fp1", "Fp2"), ("F7", "F8"), ("F3", "F4"), ("T7", "T8"),
    ("C3", "C4"), ("P7", "P8"), ("P3", "P4"), ("O1", "O2"),
]  # fmt: skip
MIDLINE = ("Fz", "Cz", "Pz")
MONTAGES = {"cyton": CYTON, "cyton-daisy": DAISY, "muse": MUSE, "synthetic": SYNTHETIC}


def _side(label: str) -> float:
    """+1 left hemisphere (odd number), -1 right (even), 0 midline (``z``)."""
    name = canonical_label(label)
    assert name is not None
    if name.endswith("z"):
        return 0.0
    return 1.0 if int(name.rstrip("h")[-1]) % 2 else -1.0


def _mirror_label(label: str) -> str:
    name = canonical_label(label)
    assert name is not None
    if name.endswith("z"):
        return name
    stem = name.rstrip("0123456789")
    n = int(name[len(stem) :])
    return f"{stem}{n + 1 if n % 2 else n - 1}"


# --------------------------------------------------------------------------- labels


def test_virtual_sites_are_the_10_20_system():
    assert len(VIRTUAL_SITES) == 19 == len(set(VIRTUAL_SITES))
    assert [canonical_label(s) for s in VIRTUAL_SITES] == list(VIRTUAL_SITES)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Fp1", "Fp1"),
        ("fp1", "Fp1"),
        ("FP1", "Fp1"),
        (" Fp1 ", "Fp1"),
        ("EEG Fp1", "Fp1"),
        ("eeg_fp1", "Fp1"),
        ("Fp1-REF", "Fp1"),
        ("FP1-A1", "Fp1"),
        ("EEG FP1-LE", "Fp1"),
        ("Fc5.", "FC5"),
        ("POZ", "POz"),
        ("afp10h", "AFp10h"),
        ("T3", "T7"),
        ("t5", "P7"),
        ("EEG T4-REF", "T8"),
        ("T6", "P8"),
        ("A1", "A1"),
        ("M2", "M2"),
        ("EXG Channel 0", None),
        ("Accel", None),
        ("AUX1", None),
        ("EEG1", None),
        ("Fp1-F7", None),
        ("Fpz-Cz", None),
        ("REF", None),
        ("", None),
    ],
)
def test_canonical_label(label, expected):
    assert canonical_label(label) == expected


def test_aliases_share_positions_and_count_as_duplicates():
    for old, new in ALIASES.items():
        pos, known = scalp_positions([old, new])
        assert known.all()
        np.testing.assert_array_equal(pos[0], pos[1])
        mm = montage_map([old, "Cz", new])
        assert mm.used == (old, "Cz")
        assert mm.left_out == {new: f"duplicate of {old}"}
        assert f"{old} as {new}" in mm.describe()


def test_scalp_positions_are_oriented_unit_vectors():
    labels = ["Cz", "Fpz", "Oz", "T7", "T8", "EXG Channel 0", "F3", "F4", "A1"]
    pos, known = scalp_positions(labels)
    assert pos.shape == (9, 3)
    np.testing.assert_array_equal(known, [True] * 5 + [False] + [True] * 3)
    assert np.isnan(pos[5]).all()
    np.testing.assert_allclose(np.linalg.norm(pos[known], axis=1), 1.0, rtol=1e-12)
    cz, fpz, oz, t7, t8 = pos[:5]
    assert cz[2] > 0.95  # z up
    assert fpz[1] > 0.9 and oz[1] < -0.9  # y front
    assert t7[0] < -0.9 and t8[0] > 0.9  # x right
    np.testing.assert_allclose(pos[6], pos[7] * [-1.0, 1.0, 1.0], atol=1e-12)  # mirror image
    assert cz[0] == 0.0


def test_template_is_loaded_lazily():
    code = (
        "import bci_affect.dsp.montage as m; "
        "assert m._template.cache_info().currsize == 0; "
        "m.canonical_label('Cz'); "
        "assert m._template.cache_info().currsize == 1"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------- weights


def test_dense_montage_is_near_identity(rng):
    mm = montage_map(VIRTUAL_SITES)
    w = mm.weights
    assert w.shape == (19, 19)
    assert np.diag(w).min() > 1 - 1e-6
    assert (w - np.diag(np.diag(w))).max() < 1e-6
    x = rng.normal(size=(7, 19, 5))
    np.testing.assert_allclose(mm.apply(x), x, atol=1e-6)

    reversed_map = montage_map(VIRTUAL_SITES[::-1])
    np.testing.assert_allclose(reversed_map.weights, np.eye(19)[:, ::-1], atol=1e-6)


def test_rows_sum_to_one_over_used_channels():
    labels = ["Fp1", "EXG Channel 8", "C3", "A1", "O2", "T3", "T7", "Accel"]
    mm = montage_map(labels)
    assert mm.ch_names == tuple(labels) and mm.sites == VIRTUAL_SITES
    assert mm.used == ("Fp1", "C3", "O2", "T3")
    assert mm.left_out == {
        "EXG Channel 8": REASON_UNKNOWN,
        "A1": REASON_REFERENCE,
        "T7": "duplicate of T3",
        "Accel": REASON_UNKNOWN,
    }
    used = [labels.index(c) for c in mm.used]
    left = [i for i in range(len(labels)) if i not in used]
    np.testing.assert_allclose(mm.weights.sum(axis=1), 1.0, rtol=1e-12)
    assert (mm.weights[:, used] > 0).all()
    assert (mm.weights[:, left] == 0).all()
    with pytest.raises(ValueError, match="read-only"):
        mm.weights[0, 0] = 1.0
    line = mm.describe()
    assert "\n" not in line
    assert line.startswith("EEG montage: 4 of 8 channels used (Fp1, C3, O2, T3 as T7)")
    for label, reason in mm.left_out.items():
        assert f"{label} ({reason})" in line


def test_nearest_electrode_dominates_a_sparse_montage():
    mm = montage_map(CYTON)
    w = mm.weights
    for site in CYTON:  # coinciding sites copy their electrode
        assert w[VIRTUAL_SITES.index(site), CYTON.index(site)] > 1 - 1e-6
    # F3 lies between Fp1 and C3: they carry most of its weight
    f3 = w[VIRTUAL_SITES.index("F3")]
    assert f3[CYTON.index("Fp1")] + f3[CYTON.index("C3")] > 0.6
    assert f3.argmax() in (CYTON.index("Fp1"), CYTON.index("C3"))


@pytest.mark.parametrize("montage", list(MONTAGES))
def test_left_right_asymmetry_is_kept(montage):
    labels = MONTAGES[montage]
    x = np.array([_side(c) for c in labels])[:, None]  # (n_chans, 1): +1 left, -1 right
    y = montage_map(labels).apply(x)[:, 0]
    for left, right in HOMOLOGOUS:
        contrast = y[VIRTUAL_SITES.index(left)] - y[VIRTUAL_SITES.index(right)]
        assert contrast > 0.9, (left, right, contrast)  # of 2 at most
    for site in MIDLINE:  # symmetric montage: midline stays in the middle
        assert abs(y[VIRTUAL_SITES.index(site)]) < 1e-9


@pytest.mark.parametrize("montage", list(MONTAGES))
def test_mirrored_montage_gives_mirrored_sites(rng, montage):
    labels = MONTAGES[montage]
    x = rng.normal(size=(3, len(labels), 2))
    y = montage_map(labels).apply(x)
    y_mirror = montage_map([_mirror_label(c) for c in labels]).apply(x)
    site_mirror = [VIRTUAL_SITES.index(_mirror_label(s)) for s in VIRTUAL_SITES]
    np.testing.assert_allclose(y_mirror, y[:, site_mirror], rtol=1e-9, atol=1e-12)


def test_channel_order_does_not_matter(rng):
    labels = DAISY + ("EXG Channel 16", "A2")
    x = rng.normal(size=(4, len(labels), 5))
    x[1, 3, 2] = np.nan
    perm = rng.permutation(len(labels))
    mm = montage_map(labels)
    mm_perm = montage_map([labels[i] for i in perm])
    np.testing.assert_allclose(mm_perm.weights, mm.weights[:, perm], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mm_perm.apply(x[:, perm]), mm.apply(x), rtol=1e-12)
    assert set(mm_perm.used) == set(mm.used) and mm_perm.left_out == mm.left_out


# --------------------------------------------------------------------------- apply


def test_output_shape_with_batch_dims(rng):
    mm = montage_map(MUSE)
    x = rng.normal(size=(2, 3, 4, 5))  # (batch, windows, n_chans, n_bands)
    y = mm.apply(x)
    assert y.shape == (2, 3, 19, 5) and y.dtype == np.float64
    np.testing.assert_allclose(y[1, 2], mm.apply(x[1, 2]), rtol=1e-12)
    np.testing.assert_allclose(y[1, 2], mm.weights @ x[1, 2], rtol=1e-12)
    assert mm.apply(x[0, 0]).shape == (19, 5)
    y32 = mm.apply(x.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-5)
    assert mm.apply(np.ones((4, 3), dtype=int)).dtype == np.float64
    with pytest.raises(ShapeError, match="n_chans=4"):
        mm.apply(x[..., :3, :])
    with pytest.raises(ShapeError, match="n_chans=4"):
        mm.apply(x[0, 0, 0])


def test_nan_channel_affects_only_its_window(rng):
    mm = montage_map(CYTON)
    x = rng.normal(2.0, 1.0, size=(6, 8, 5))
    bad = x.copy()
    k = CYTON.index("O1")
    bad[2, k, :] = np.nan
    y, y_bad = mm.apply(x), mm.apply(bad)
    others = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(y_bad[others], y[others])
    assert np.isfinite(y_bad).all()
    assert not np.allclose(y_bad[2], y[2])
    # the window equals the map of the montage without that channel
    keep = [i for i in range(8) if i != k]
    without = montage_map([CYTON[i] for i in keep])
    np.testing.assert_allclose(y_bad[2], without.apply(x[2, keep]), rtol=1e-9)


def test_nonfinite_value_affects_only_its_band(rng):
    mm = montage_map(DAISY)
    x = rng.normal(size=(3, 16, 5))
    bad = x.copy()
    bad[1, 4, 3] = -np.inf  # log of a flat channel
    y, y_bad = mm.apply(x), mm.apply(bad)
    changed = ~np.isclose(y_bad, y, rtol=0, atol=0)
    assert changed[1, :, 3].any()
    changed[1, :, 3] = False
    assert not changed.any()
    assert np.isfinite(y_bad).all()


def test_window_with_only_bad_channels_is_nan(rng):
    mm = montage_map(MUSE)
    x = rng.normal(size=(3, 4, 2))
    x[1] = np.nan
    y = mm.apply(x)
    assert np.isnan(y[1]).all()
    assert np.isfinite(y[[0, 2]]).all()


def test_site_with_all_weight_on_nan_channels_is_nan():
    mm = MontageMap(
        ch_names=("a", "b", "c", "d"),
        sites=("s", "t"),
        weights=np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.25, 0.75, 0.0]]),
        used=("a", "b", "c"),
        left_out={"d": REASON_UNKNOWN},
    )
    x = np.array([[np.nan], [1.0], [np.nan], [np.inf]])  # (n_chans, n_bands)
    y = mm.apply(x)
    assert np.isnan(y[0, 0])
    assert y[1, 0] == 1.0  # renormalised over b; d is not used


def test_left_out_channels_are_ignored(rng):
    labels = ("Fp1", "AUX1", "O2", "A1")
    mm = montage_map(labels)
    x = rng.normal(size=(5, 4, 3))
    junk = x.copy()
    junk[:, 1] = np.nan
    junk[:, 3] = 1e300
    np.testing.assert_array_equal(mm.apply(junk), mm.apply(x))
    assert np.isfinite(mm.apply(junk)).all()


def test_montage_map_checks_its_weights():
    with pytest.raises(ShapeError, match="n_sites, n_chans"):
        MontageMap(("a",), ("s", "t"), np.ones((1, 1)), ("a",), {})
    with pytest.raises(ConfigError, match="non-negative"):
        MontageMap(("a", "b"), ("s",), np.array([[1.5, -0.5]]), ("a", "b"), {})


# --------------------------------------------------------------------------- errors


def test_too_few_known_labels_raise_one_line():
    labels = ["EXG Channel 0", "EXG Channel 1", "Fp1"]
    with pytest.raises(
        ConfigError,
        match=r"only 1 of 3 .*\(Fp1\).*EXG Channel 0, EXG Channel 1 have no scalp position.*--montage",
    ) as info:
        montage_map(labels)
    assert "\n" not in str(info.value)
    assert montage_map(labels, min_known=1).used == ("Fp1",)


def test_references_and_duplicates_do_not_count():
    with pytest.raises(ConfigError, match=r"A1 \(reference/ear site\)"):
        montage_map(["A1", "M2", "Cz"])
    with pytest.raises(ConfigError, match=r"T7 \(duplicate of T3\)"):
        montage_map(["T3", "T7"])
    assert montage_map(["T3", "T8"]).used == ("T3", "T8")


@pytest.mark.parametrize("min_known", [0, -1, 1.5, True])
def test_bad_min_known(min_known):
    with pytest.raises(ConfigError, match="min_known"):
        montage_map(CYTON, min_known=min_known)


def test_no_channels():
    with pytest.raises(ConfigError, match="no EEG channels"):
        montage_map([])


# --------------------------------------------------------------------------- BrainFlow boards


def _board_labels(board: str) -> tuple[list[str], bool]:
    """BrainFlow's default EEG labels of a board, or the placeholders bci-affect streams
    without them (``EEG1``, ... as in acquisition.brainflow_source); True when BrainFlow has
    names."""
    board_shim = pytest.importorskip("brainflow.board_shim")
    descr = board_shim.BoardShim.get_board_descr(getattr(board_shim.BoardIds, board).value)
    n = len(descr["eeg_channels"])
    names = [c for c in str(descr.get("eeg_names", "")).split(",") if c]
    if len(names) == n:
        return names, True
    return [f"EEG{i + 1}" for i in range(n)], False


@pytest.mark.parametrize(
    "board",
    [
        "SYNTHETIC_BOARD",
        "CYTON_BOARD",
        "CYTON_DAISY_BOARD",
        "MUSE_S_BOARD",
        "MUSE_2_BOARD",
        "MUSE_S_BLED_BOARD",
        "MUSE_2_BLED_BOARD",
    ],
)
def test_brainflow_default_labels_map(board):
    labels, named = _board_labels(board)
    assert named, f"BrainFlow gives {board} no default EEG names"
    mm = montage_map(labels)
    assert len(mm.used) >= 2
    assert mm.used == tuple(labels) and not mm.left_out  # every default label is a 10-05 site
    assert np.isfinite(mm.apply(np.ones((len(labels), 5)))).all()


@pytest.mark.parametrize("board", ["GANGLION_BOARD", "GANGLION_NATIVE_BOARD"])
def test_brainflow_board_without_names(board):
    labels, named = _board_labels(board)
    if named:  # a newer BrainFlow names them: they must map
        assert len(montage_map(labels).used) >= 2
        return
    with pytest.raises(ConfigError, match=rf"{labels[0]}, .* no scalp position.*--montage"):
        montage_map(labels)
    assert montage_map(["Fp1", "Fp2", "O1", "O2"][: len(labels)]).used
