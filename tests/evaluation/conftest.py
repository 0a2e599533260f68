"""Fixtures of the evaluation tests: a tiny simulated dataset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ..training.sessions import TINY_SESSION


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and the tests share the machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """``DIR/sub-0k/ses-01.xdf`` for two short simulated subjects."""
    from acquisition.simulator import SimulatorConfig, simulate_dataset

    out = tmp_path_factory.mktemp("bench-sim")
    config = SimulatorConfig().replace(session=TINY_SESSION, face={"fps": 5.0})
    simulate_dataset(2, out, seed=5, config=config)
    return out
