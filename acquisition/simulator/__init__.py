"""Labelled synthetic affective sessions, written exactly like ``bci-affect record`` writes them.

A simulated session is a subject watching ``n_trials`` stimuli (balanced over the four
valence/arousal quadrants) and rating each on 1-9 scales, recorded as XDF with the streams the
live pipeline produces: ``EEG`` (µV, float32, the OpenBCI Cyton montage at 250 Hz by default),
``EEG-events``, ``FaceFeatures`` (the live camera pipeline's 160 channels), its events, and
``Markers`` (JSON: ``session_start`` with the seed, ``trial_start``, ``rating``,
``trial_end``, ``session_end``). A JSON sidecar beside the file holds the configuration and
the ground truth.

The signals are realistic on purpose (see ``docs/simulator.md``): an EEG background anchored
on a real OpenBCI recording, blinks, muscle bursts, line noise, pops, a railed channel; affect
effects that are weak, subject-specific and absent in some subjects; a smile that adds EMG to
the EEG (a confound); poker-faced subjects, occlusions and face-lost spans; noisy and
sometimes wrong ratings.

Use::

    from acquisition.simulator import SimulatorConfig, simulate_dataset, load_config
    simulate_dataset(10, "data/sim", seed=1, config=load_config("sim.toml"))

or ``bci-affect simulate --subjects 10 --out data/sim --seed 1 --config sim.toml``.
"""

from acquisition.simulator.config import (
    AffectConfig,
    ArtifactConfig,
    EegConfig,
    FaceConfig,
    LabelConfig,
    SessionConfig,
    SimulatorConfig,
    config_to_toml,
    describe_fields,
    load_config,
)
from acquisition.simulator.protocol import Schedule, Trial
from acquisition.simulator.session import (
    SimulatedSession,
    SubjectSummary,
    session_path,
    simulate_dataset,
    simulate_session,
    write_session,
)
from acquisition.simulator.subject import SubjectParams, draw_subject, subject_id

__all__ = [
    "AffectConfig",
    "ArtifactConfig",
    "EegConfig",
    "FaceConfig",
    "LabelConfig",
    "Schedule",
    "SessionConfig",
    "SimulatedSession",
    "SimulatorConfig",
    "SubjectParams",
    "SubjectSummary",
    "Trial",
    "config_to_toml",
    "describe_fields",
    "draw_subject",
    "load_config",
    "session_path",
    "simulate_dataset",
    "simulate_session",
    "subject_id",
    "write_session",
]
