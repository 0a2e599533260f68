"""Fixtures of the simulator tests: short sessions, simulated once per test session."""

from __future__ import annotations

import pytest

from acquisition.simulator import SimulatorConfig, simulate_session, write_session

#: A short protocol: 8 trials of 10-14 s, about 2.5 min per session.
SHORT = {
    "n_trials": 8,
    "trial_s": [10.0, 14.0],
    "rest_s": [4.0, 6.0],
    "lead_in_s": 5.0,
    "tail_s": 2.0,
    "rating_s": 2.0,
}


@pytest.fixture(scope="session")
def short_config() -> SimulatorConfig:
    return SimulatorConfig().replace(session=SHORT)


@pytest.fixture(scope="session")
def short_session(short_config):
    return simulate_session(short_config, seed=11, subject_index=1)


@pytest.fixture(scope="session")
def written(short_session, tmp_path_factory):
    """The short session written to ``<tmp>/sub-01/ses-01.xdf`` (+ sidecar)."""
    path = tmp_path_factory.mktemp("sim") / "sub-01" / "ses-01.xdf"
    write_session(short_session, path)
    return path
