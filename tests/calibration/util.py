"""Helpers of the calibration tests and benchmarks: a label store filled from a recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acquisition.xdf import XdfSource
from bci_affect.engine.models import bundled_model_path
from bci_affect.models.checkpoint import load_checkpoint, save_checkpoint
from bci_affect.models.teacher import rating_to_label
from bci_affect.processors import process_recording
from bci_affect.training.inputs import window_arrays
from bci_affect.training.model_io import load_model
from calibration.personalise import INPUT_KEYS, features_metadata
from calibration.store import LabelStore
from calibration.ui import Answer

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "recordings" / "sample" / "demo.xdf"


def start_model(folder: Path) -> Path:
    """The bundled model saved as a subject's v0 checkpoint in ``folder``."""
    trained = load_model(bundled_model_path())
    model = load_checkpoint(bundled_model_path())
    save_checkpoint(model, folder, metadata={"features": features_metadata(model, trained.signals)})
    return folder


def labelled_store(
    path: Path,
    *,
    subject: str = "S01",
    n_windows: int = 100,
    span_s: float = 8.0,
    xdf: Path = DEMO,
    seed: int = 0,
    live: str = "random",
    random_every: int = 0,
) -> tuple[Path, int]:
    """A store whose subject answered queries covering about ``n_windows`` windows of
    ``xdf`` (random ratings; each window's live probabilities are a random distribution, or
    with ``live="right"`` / ``"wrong"`` sure of the answer's class / of another class; with
    ``live="mixed"`` right on the queries asked at random moments and wrong on the others).
    Every ``random_every``-th query (0: none) is one asked at a random moment (method
    ``random``), the others by disagreement.

    Returns the store path and the number of labelled windows.
    """
    rng = np.random.default_rng(seed)
    trained = load_model(bundled_model_path())
    with XdfSource(xdf) as src:
        streams = {c.info.name: c for c in src.load()}
    results = process_recording(streams["EEG"], streams["FaceFeatures"], trained.signals)
    results = [r for r in results if r.window.complete]
    classes = list(trained.model.class_names)
    n_done = 0
    with LabelStore(path) as store:
        store.ensure_subject(subject)
        ses = store.start_session(
            subject,
            name="fixture",
            config={"budget": 100},
            label_scheme=trained.model.config.label_scheme,
            class_names=classes,
        )
        t = results[0].window.t_end - 1e-6
        n_query = 0
        while n_done < n_windows:
            in_span = [r for r in results if t < r.window.t_end <= t + span_s]
            if not in_span:
                raise ValueError(f"{xdf} has fewer than {n_windows} complete windows")
            in_span = in_span[: n_windows - n_done]
            v, ar = (int(x) for x in rng.integers(1, 10, 2))
            probs = rng.dirichlet(np.ones(len(classes)), size=len(in_span))
            chosen_at_random = random_every > 0 and n_query % random_every == random_every - 1
            method = "random" if chosen_at_random else "disagreement"
            if live != "random":
                label = rating_to_label(v, ar, scheme=trained.model.config.label_scheme)
                right = live == "right" or (live == "mixed" and method == "random")
                target = label if right else (label + 1) % len(classes)
                probs = np.full((len(in_span), len(classes)), 0.01)
                probs[:, target] = 1.0 - 0.01 * (len(classes) - 1)
            q = store.add_query(
                ses.id,
                t_start=t,
                t_end=t + span_s,
                score=float(rng.uniform()),
                method=method,
                model_version=0,
                prediction={
                    "fused": probs.mean(0).tolist(),
                    "window_probs": {
                        str(r.window.index): p.tolist() for r, p in zip(in_span, probs, strict=True)
                    },
                },
            )
            windows = []
            for r in in_span:
                a = window_arrays([r], eeg_raw=False, sites=trained.model.config.montage_free)
                one = {k: None if a[k] is None else np.asarray(a[k][0]) for k in INPUT_KEYS}
                windows.append((int(r.window.index), float(r.window.t_end), one))
            store.add_query_windows(q.id, windows)
            store.mark_shown(q.id, 1.0)
            store.answer(Answer(q.id, v, ar, False, 2.0))
            n_done += len(in_span)
            n_query += 1
            t += span_s
    return path, n_done
