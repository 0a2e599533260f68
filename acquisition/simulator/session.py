"""One simulated session end to end: draw, simulate, write XDF + sidecar; and whole datasets.

Randomness: subject ``k`` (1-based) of seed ``S`` uses ``numpy.random.SeedSequence(S,
spawn_key=(k,))``, split into independent generators for the subject's traits, the schedule,
the expressions, the blinks, the EEG and the face.
So ``sub-03`` is the same whether 3 or 30 subjects are simulated, and changing a ``[face]``
setting leaves the EEG untouched except through the expressions (poker face, expressivity,
expression rates and durations), which drive the smile EMG.

Files: ``<out>/<subject>/<session>.xdf`` with the streams ``EEG``, ``EEG-events``,
``FaceFeatures``, ``FaceFeatures-events`` and ``Markers`` (the EEG and face names are
configurable), and the JSON sidecar ``<session>.json`` beside it in the layout
``bci-affect record`` writes, plus ``simulator`` (seed, subject index) and ``ground_truth`` (subject traits, per-trial targets,
felt states, ratings and flipped labels, artifacts, face episodes).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import platform
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from acquisition.simulator.config import SimulatorConfig
from acquisition.simulator.eeg import simulate_eeg
from acquisition.simulator.face import face_stream_infos, simulate_face
from acquisition.simulator.latent import draw_blinks, draw_expressions
from acquisition.simulator.montage import channel_layout
from acquisition.simulator.protocol import Schedule, make_schedule, marker_samples
from acquisition.simulator.subject import SubjectParams, draw_subject, subject_id
from bci_affect.core.chunk import Chunk, StreamInfo
from bci_affect.core.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "SimulatedSession",
    "session_path",
    "simulate_dataset",
    "simulate_session",
    "write_session",
]

#: ``generator`` field of the session_start marker and the sidecar.
GENERATOR = "bci-affect simulate"

_UID_NAMESPACE = uuid.UUID("6f1c8c9e-5a4b-4c1e-9a53-0b1d2c3e4f50")


def _version() -> str:
    import bci_affect  # noqa: PLC0415

    return bci_affect.__version__


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class SimulatedSession:
    """A simulated session in memory.

    Attributes
    ----------
    subject : SubjectParams
    schedule : Schedule
    streams : tuple of StreamInfo
        In file order: EEG, EEG-events, FaceFeatures, FaceFeatures-events, Markers.
    chunks : tuple of Chunk
        One whole chunk per stream (same order).
    seed, subject_index : int
    config : SimulatorConfig
    ground_truth : dict
        JSON-ready: ``subject`` (the traits), ``trials`` (targets, felt states, ratings,
        flips, times), ``eeg_artifacts``, ``face``.
    """

    subject: SubjectParams
    schedule: Schedule
    streams: tuple[StreamInfo, ...]
    chunks: tuple[Chunk, ...]
    seed: int
    subject_index: int
    config: SimulatorConfig
    ground_truth: dict

    def chunk(self, name: str) -> Chunk:
        """The chunk of stream ``name``."""
        for c in self.chunks:
            if c.info.name == name:
                return c
        raise KeyError(f"no stream {name!r}; streams: {[c.info.name for c in self.chunks]}")


def simulate_session(
    config: SimulatorConfig | None = None,
    *,
    seed: int = 0,
    subject_index: int = 1,
    n_subjects: int = 1,
) -> SimulatedSession:
    """Simulate one subject's session in memory.

    Parameters
    ----------
    config : SimulatorConfig, optional
        Default: ``SimulatorConfig()``.
    seed : int
        Master seed (>= 0) of the dataset.
    subject_index : int
        1-based index of the subject; with ``seed`` it fixes every random draw.
    n_subjects : int
        Size of the dataset (only for the width of the subject id: ``sub-01`` or ``sub-001``).
    """
    config = config or SimulatorConfig()
    seed = _check_seed(seed)
    if isinstance(subject_index, bool) or not isinstance(subject_index, int) or subject_index < 1:
        raise ConfigError(f"subject_index must be an integer >= 1, got {subject_index!r}")
    sid = subject_id(subject_index, n_subjects)
    root = np.random.SeedSequence(seed, spawn_key=(subject_index,))
    rngs = [np.random.default_rng(s) for s in root.spawn(6)]
    r_subject, r_schedule, r_expr, r_blink, r_eeg, r_face = rngs

    subject = draw_subject(config, r_subject, sid)
    schedule = make_schedule(config, r_schedule)
    expressions = draw_expressions(config, subject, schedule, r_expr)
    blinks = draw_blinks(config, subject, schedule, r_blink)
    layout = channel_layout(config.eeg.ch_names)
    eeg = simulate_eeg(config, subject, schedule, layout, expressions, blinks, r_eeg)

    base_id = f"bci-affect:simulator:{seed}:{sid}"
    eeg_desc = {"board": "simulator", "device": GENERATOR}
    eeg_info = StreamInfo(
        name=config.eeg.name,
        type="EEG",
        sfreq=config.eeg.sfreq_hz,
        ch_names=config.eeg.ch_names,
        units=("microvolts",) * len(config.eeg.ch_names),
        source_id=base_id,
        channel_format="float32",
        desc=eeg_desc,
    )
    eeg_events_info = StreamInfo(
        name=f"{config.eeg.name}-events",
        type="Markers",
        sfreq=0.0,
        ch_names=("event",),
        units=("",),
        source_id=f"{base_id}:events",
        channel_format="string",
        desc=eeg_desc,
    )
    face_info, face_events_info = face_stream_infos(config, f"{base_id}:face")
    face = simulate_face(config, subject, schedule, face_info.ch_names, expressions, blinks, r_face)
    markers_info = StreamInfo(
        name="Markers",
        type="Markers",
        sfreq=0.0,
        ch_names=("event",),
        units=("",),
        source_id=f"{base_id}:markers",
        channel_format="string",
    )
    header = {
        "subject": sid,
        "session": config.session.name,
        "seed": seed,
        "subject_index": subject_index,
        "generator": GENERATOR,
        "version": _version(),
    }
    marker_strings, marker_times = marker_samples(schedule, header)

    from acquisition.camera import make_events_chunk  # noqa: PLC0415

    chunks = (
        Chunk(eeg.data, eeg.times, eeg_info),
        Chunk.empty(eeg_events_info),
        Chunk(face.data, face.times, face_info),
        make_events_chunk(face_events_info, face_info.name, face.events)
        if face.events
        else Chunk.empty(face_events_info),
        Chunk(np.array([marker_strings], dtype=object), marker_times, markers_info),
    )
    truth = {
        "subject": subject.to_dict(),
        "trials": [t.to_dict() for t in schedule.trials],
        "eeg_artifacts": eeg.artifacts,
        "face": face.truth,
    }
    return SimulatedSession(
        subject=subject,
        schedule=schedule,
        streams=tuple(c.info for c in chunks),
        chunks=chunks,
        seed=seed,
        subject_index=subject_index,
        config=config,
        ground_truth=truth,
    )


def session_path(out_dir: str | os.PathLike, subject: str, config: SimulatorConfig) -> Path:
    """``<out_dir>/<subject>/<session name>.xdf``."""
    return Path(out_dir) / subject / f"{config.session.name}.xdf"


def _stream_uid(session: SimulatedSession, name: str) -> str:
    key = f"{session.seed}/{session.subject.subject}/{session.config.session.name}/{name}"
    return str(uuid.uuid5(_UID_NAMESPACE, key))


def _software() -> dict[str, str]:
    import scipy  # noqa: PLC0415

    return {
        "bci_affect": _version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def _stream_entry(chunk: Chunk, uid: str) -> dict:
    info, n = chunk.info, chunk.n_times
    t = chunk.times
    return {
        "name": info.name,
        "type": info.type,
        "n_chans": info.n_chans,
        "sfreq": info.sfreq,
        "channel_format": info.channel_format,
        "source_id": info.source_id,
        "hostname": "",
        "uid": uid,
        "created_at": float(t[0]) if n else 0.0,
        "ch_names": list(info.ch_names),
        "units": list(info.units),
        "desc": {k: v for k, v in info.desc.items() if isinstance(v, str)},
        "n_samples": n,
        "first_timestamp": float(t[0]) if n else None,
        "last_timestamp": float(t[-1]) if n else None,
        "effective_sfreq": (n - 1) / (t[-1] - t[0]) if n > 1 and info.sfreq > 0 else None,
    }


def _utc_plus(start_utc: str, seconds: float) -> str:
    start = datetime.fromisoformat(start_utc.replace("Z", "+00:00"))
    stop = start + timedelta(seconds=seconds)
    return stop.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_xdf(path: Path, session: SimulatedSession, header: dict) -> None:
    from acquisition.xdf_writer import write_xdf  # noqa: PLC0415

    kwargs = {}
    # Stream headers carry a uid; a writer that accepts them gets reproducible ones.
    if "uids" in inspect.signature(write_xdf).parameters:
        kwargs["uids"] = {s.name: _stream_uid(session, s.name) for s in session.streams}
    write_xdf(path, session.chunks, streams=session.streams, header=header, **kwargs)


def write_session(
    session: SimulatedSession, path: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``session`` to ``path`` (``.xdf``) and its sidecar ``<path stem>.json``.

    Both files are replaced atomically. Returns ``path``.

    Raises
    ------
    ConfigError
        ``path`` does not end in ``.xdf``, or it (or its sidecar) exists and not ``overwrite``.
    """
    from acquisition.recorder import SIDECAR_VERSION, sidecar_path  # noqa: PLC0415

    path = Path(path)
    if path.suffix.lower() != ".xdf":
        raise ConfigError(f"session file {path} must end in .xdf")
    sidecar = sidecar_path(path)
    for p in (path, sidecar):
        if p.is_dir():
            raise ConfigError(f"{p} is a folder; give a file name ending in .xdf")
        if p.exists() and not overwrite:
            raise ConfigError(
                f"{p} already exists; pass --overwrite (overwrite=True) to replace it"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = session.config.session
    _write_xdf(path, session, {"datetime": cfg.start_utc.replace("Z", "+0000")})
    size = path.stat().st_size
    sched = session.schedule
    doc = {
        "format": "bci-affect recording sidecar",
        "format_version": SIDECAR_VERSION,
        "file": path.name,
        "status": "complete",
        "error": None,
        "subject": session.subject.subject,
        "session": cfg.name,
        "board": "simulator",
        "montage": ",".join(session.config.eeg.ch_names),
        "software": _software(),
        "host": None,
        "config": session.config.to_dict(),
        "start": {"lsl_clock": sched.start, "utc": _utc_plus(cfg.start_utc, 0.0)},
        "stop": {"lsl_clock": sched.stop, "utc": _utc_plus(cfg.start_utc, sched.duration_s)},
        "duration_s": sched.duration_s,
        "size_bytes": size,
        "streams": [_stream_entry(c, _stream_uid(session, c.info.name)) for c in session.chunks],
        "simulator": {
            "generator": GENERATOR,
            "seed": session.seed,
            "subject_index": session.subject_index,
        },
        "ground_truth": session.ground_truth,
    }
    tmp = sidecar.with_name(f".{sidecar.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, sidecar)
    logger.info("wrote %s and %s", path, sidecar)
    return path


@dataclass(frozen=True)
class SubjectSummary:
    """One written session, as reported by :func:`simulate_dataset`'s progress callback."""

    index: int
    n_subjects: int
    subject: SubjectParams
    path: Path
    size_bytes: int
    duration_s: float
    n_trials: int
    elapsed_s: float


def simulate_dataset(
    n_subjects: int,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    config: SimulatorConfig | None = None,
    overwrite: bool = False,
    progress: Callable[[SubjectSummary], None] | None = None,
) -> list[Path]:
    """Simulate ``n_subjects`` subjects into ``out_dir/sub-XX/<session>.xdf`` (+ sidecars).

    Every target is checked before anything is written, so an existing dataset is never
    half-overwritten by mistake. ``progress`` is called after each subject.

    Raises
    ------
    ConfigError
        ``n_subjects < 1``, a bad seed, or existing files without ``overwrite``.
    """
    import time  # noqa: PLC0415

    from acquisition.recorder import sidecar_path  # noqa: PLC0415

    config = config or SimulatorConfig()
    seed = _check_seed(seed)
    if isinstance(n_subjects, bool) or not isinstance(n_subjects, int) or n_subjects < 1:
        raise ConfigError(f"the number of subjects must be an integer >= 1, got {n_subjects!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    targets = [
        session_path(out, subject_id(k, n_subjects), config) for k in range(1, n_subjects + 1)
    ]
    if not overwrite:
        existing = [p for t in targets for p in (t, sidecar_path(t)) if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise ConfigError(
                f"{existing[0]} already exists{more}; choose another --out or pass --overwrite"
            )
    written = []
    for k, target in enumerate(targets, start=1):
        t0 = time.perf_counter()
        session = simulate_session(config, seed=seed, subject_index=k, n_subjects=n_subjects)
        write_session(session, target, overwrite=overwrite)
        written.append(target)
        if progress is not None:
            progress(
                SubjectSummary(
                    index=k,
                    n_subjects=n_subjects,
                    subject=session.subject,
                    path=target,
                    size_bytes=target.stat().st_size,
                    duration_s=session.schedule.duration_s,
                    n_trials=len(session.schedule.trials),
                    elapsed_s=time.perf_counter() - t0,
                )
            )
    return written
