"""Fixtures of the engine tests: a short simulated session written as XDF (once per run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

#: Seconds of the short session: lead-in, one rated trial, rest, a second trial, tail.
SHORT_SESSION = {
    "name": "short",
    "n_trials": 2,
    "trial_s": (8.0, 8.0),
    "rating_s": 2.0,
    "rest_s": (2.0, 2.0),
    "lead_in_s": 1.0,
    "tail_s": 1.0,
}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Windows are small: one thread is fastest, and the tests share the machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def short_xdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 20 s of EEG (8 ch, 250 Hz), FaceFeatures (30 fps) and Markers, from the simulator."""
    from acquisition.simulator import SimulatorConfig, simulate_session, write_session

    cfg = SimulatorConfig().replace(session=SHORT_SESSION, artifacts={"line_freq_hz": 50.0})
    session = simulate_session(cfg, seed=11)
    path = tmp_path_factory.mktemp("engine") / "short.xdf"
    return write_session(session, path)
