"""Training time on recorded sessions: 2,000 windows of real-shaped data, end to end.

Run: ``.venv/bin/python benchmarks/train_time.py [--threads 1,2] [--subjects 4]
[--personalisation-only]``

Four simulated subjects (default sessions: 16 trials of 20-30 s, EEG 8 ch at 250 Hz,
FaceFeatures 160 ch at 30 fps, so 4 s windows hold about 120 face frames) are turned into
labelled windows by the same signals chain as live inference; then

- ``train_model`` trains on 2,000 windows (default settings: 30 epochs, batch 64), including
  the trial split, the baselines, the conformal fit and the scoring of both sides;
- ``fit`` alone on the same 2,000 windows;
- ``finetune_model`` personalises on one subject's calibration session;
- a personalisation round: ``finetune`` with ``freeze="teacher_encoder"`` (student, prototypes
  and the teacher's task head learn, the teacher's encoder stays fixed) on 100 labelled and 200
  unlabelled windows of one subject, 15 epochs (target <= 5 s on one thread);
- the baseline measured in the same run: the multinomial logistic regression on band features
  (L-BFGS) on the same 2,000 windows.

Each is timed with every torch thread count given (``bci-affect train`` uses 1 by default:
the model is small, and on a busy 2-core machine two threads are several times slower than
one). Target: training on 2,000 windows <= 60 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.simulator import SimulatorConfig, simulate_session  # noqa: E402
from bci_affect.models.finetune import TrainConfig, finetune, fit  # noqa: E402
from bci_affect.models.transfer import AffectModel  # noqa: E402
from bci_affect.processors import SignalsConfig  # noqa: E402
from bci_affect.training.dataset import DatasetConfig, build_dataset  # noqa: E402
from bci_affect.training.train import (  # noqa: E402
    TrainSettings,
    finetune_model,
    fit_logistic_baseline,
    model_config_for,
    train_model,
)

N_TRAIN = 2000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads",
        default="1,2",
        help="torch thread counts to time, comma-separated (default 1,2)",
    )
    parser.add_argument("--subjects", type=int, default=4, help="simulated subjects (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    parser.add_argument(
        "--personalisation-only",
        action="store_true",
        help="time only the personalisation round (starting from a briefly trained model)",
    )
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    t0 = time.perf_counter()
    sessions = []
    for k in range(1, args.subjects + 1):
        s = simulate_session(SimulatorConfig(), seed=args.seed, subject_index=k)
        sessions.append((f"sub-{k:02d}/ses-01", {c.name: c for c in s.chunks}))
    t_sim = time.perf_counter() - t0
    signals = SignalsConfig.make(line_hz=60.0)
    signals = replace(signals, features=replace(signals.features, tensor=False))
    t0 = time.perf_counter()
    data = build_dataset(sessions, DatasetConfig(signals=signals))
    t_build = time.perf_counter() - t0
    n_val = int(round(N_TRAIN / 0.8)) - N_TRAIN
    if len(data) < N_TRAIN + n_val:
        raise SystemExit(f"only {len(data)} windows; simulate more subjects (--subjects)")
    print(
        f"{args.subjects} simulated subjects: simulation {t_sim:.1f} s, windows + features "
        f"{t_build:.1f} s for {len(data)} labelled windows ({t_build / len(data) * 1e3:.1f} ms "
        f"per window); torch {torch.__version__}, cpu"
    )
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        rows = bench_personalisation(data) if args.personalisation_only else bench(data, n_val)
        t_base = rows[0][2]
        print(f"\n{n_threads} thread(s)")
        print(f"{'run':58s} {'windows':>7s} {'seconds':>8s} {'x baseline':>10s} {'target':>12s}")
        for name, n, sec in rows:
            limit = PERSONALISATION_TARGET_S if name.startswith("personalisation") else 60.0
            ok = f"<= {limit:g} s {'yes' if sec <= limit else 'NO'}"
            print(f"{name:58s} {n:7d} {sec:8.1f} {sec / t_base:10.1f} {ok:>12s}")
    return 0


def bench(data, n_val: int) -> list[tuple[str, int, float]]:
    first = data.subset(np.arange(N_TRAIN))
    fit_logistic_baseline(first.eeg_de[:100], first.labels[:100], first.n_classes)  # warm-up
    rows = []
    t0 = time.perf_counter()
    fit_logistic_baseline(first.eeg_de, first.labels, first.n_classes)
    rows.append(
        ("logistic regression on band DE (L-BFGS), baseline", N_TRAIN, time.perf_counter() - t0)
    )

    torch.manual_seed(0)
    model = AffectModel.from_config(model_config_for(first))
    t0 = time.perf_counter()
    fit(model, first.batch(), first.labels, TrainConfig())
    rows.append(("fit(): AffectModel, 30 epochs, batch 64", N_TRAIN, time.perf_counter() - t0))

    # train_model holds out 20 % of the trials: give it about 2,500 windows -> ~2,000 to train
    pool = data.subset(np.arange(N_TRAIN + n_val))
    t0 = time.perf_counter()
    result = train_model(pool, TrainSettings())
    rows.append(
        (
            "train_model(): split, fit, conformal, baselines, scores",
            result.split.train.size,
            time.perf_counter() - t0,
        )
    )

    calib = data.subset(data.session == data.sessions[-1])
    t0 = time.perf_counter()
    tuned = finetune_model(result.model, calib)
    rows.append(
        (
            "finetune_model(): one calibration session, 15 epochs",
            tuned.split.train.size,
            time.perf_counter() - t0,
        )
    )
    rows.append(personalisation_round(result.model, data))
    return rows


N_LABELLED, N_UNLABELLED = 100, 200
PERSONALISATION_TARGET_S = 5.0


def personalisation_round(model: AffectModel, data) -> tuple[str, int, float]:
    """``finetune`` with the teacher's encoder frozen on one subject's 300 windows."""
    calib = data.subset(data.session == data.sessions[-1])
    n = N_LABELLED + N_UNLABELLED
    if len(calib) < n:
        raise SystemExit(f"the last session has {len(calib)} windows, fewer than {n}")
    pick = np.random.default_rng(0).permutation(len(calib))[:n]
    part = calib.subset(np.sort(pick))
    labels = part.labels.copy()
    labels[np.random.default_rng(1).permutation(n)[:N_UNLABELLED]] = -1  # 100 stay labelled
    assert int((labels >= 0).sum()) == N_LABELLED
    cfg = TrainConfig(
        epochs=15, lr=1e-3, freeze="teacher_encoder", fit_input_stats=False, kl_anneal_epochs=0
    )
    tuned = copy.deepcopy(model)
    batch = part.batch()
    t0 = time.perf_counter()
    finetune(tuned, batch, labels, cfg)
    return (
        f"personalisation round ({N_LABELLED} + {N_UNLABELLED} unlabelled, 15 epochs)",
        n,
        time.perf_counter() - t0,
    )


def bench_personalisation(data) -> list[tuple[str, int, float]]:
    first = data.subset(np.arange(N_TRAIN))
    fit_logistic_baseline(first.eeg_de[:100], first.labels[:100], first.n_classes)  # warm-up
    t0 = time.perf_counter()
    fit_logistic_baseline(first.eeg_de, first.labels, first.n_classes)
    rows = [
        ("logistic regression on band DE (L-BFGS), baseline", N_TRAIN, time.perf_counter() - t0)
    ]
    torch.manual_seed(0)
    model = AffectModel.from_config(model_config_for(first))
    fit(model, first.batch(), first.labels, TrainConfig(epochs=2))
    rows.append(personalisation_round(model, data))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
