"""Fixtures of the training tests (helpers in :mod:`.sessions`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .sessions import N_SIM_SUBJECTS, SIM_SEED, short_config


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and the tests share the machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def sim_dataset(tmp_path_factory) -> Path:
    """``DIR/sub-0k/ses-01.xdf`` for three short simulated subjects."""
    from acquisition.simulator import simulate_dataset

    out = tmp_path_factory.mktemp("sim")
    simulate_dataset(N_SIM_SUBJECTS, out, seed=SIM_SEED, config=short_config())
    return out


@pytest.fixture(scope="session")
def sim_windows(sim_dataset):
    """The simulated sessions as a WindowDataset (quadrant labels, 60 Hz mains)."""
    from bci_affect.processors import SignalsConfig
    from bci_affect.training.dataset import DatasetConfig, build_dataset

    from .sessions import load_streams

    paths = sorted(sim_dataset.rglob("*.xdf"))
    sessions = [
        (p.relative_to(sim_dataset).with_suffix("").as_posix(), load_streams(p)) for p in paths
    ]
    return build_dataset(sessions, DatasetConfig(signals=SignalsConfig.make(line_hz=60.0)))
