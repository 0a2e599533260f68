"""Fixtures of the model tests: synthetic windows with real class structure, one thread."""

from __future__ import annotations

import pytest
import torch

from bci_affect.models.transfer import AffectModel

from .synthetic import EEG_CH_NAMES, FACE_CH_NAMES, make_windows


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and the tests share the machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def model() -> AffectModel:
    torch.manual_seed(0)
    return AffectModel(len(EEG_CH_NAMES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES)


@pytest.fixture(scope="session")
def train_set():
    return make_windows(600, seed=1)


@pytest.fixture(scope="session")
def test_set():
    return make_windows(1500, seed=2)


@pytest.fixture(scope="session")
def trained(train_set):
    """A model trained once for the whole session (tests must not modify it)."""
    from bci_affect.models.finetune import TrainConfig, fit

    torch.manual_seed(0)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    m = AffectModel(len(EEG_CH_NAMES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES)
    history = fit(m, train_set.batch, train_set.labels, TrainConfig(epochs=12, seed=0))
    torch.set_num_threads(n)
    return m, history
