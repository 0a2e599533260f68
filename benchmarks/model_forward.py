"""Model speed: forward pass of one window, and training on 2,000 windows.

Run: ``.venv/bin/python benchmarks/model_forward.py``

- Forward: batch 1, ``torch.set_num_threads(1)``, inference mode, the calibrated model with a
  fitted conformal predictor (so the prediction set is part of the pass), next to a plain
  multinomial logistic regression over the same differential-entropy features measured in the
  same run. Target: <= 1 ms per window. In eval mode without autograd the model runs on folded
  weights (:mod:`bci_affect.models.fused`); the eager pass of the same model is timed next to
  it (``fused_inference=False``).
- Training: ``fit`` with the default ``TrainConfig`` (30 epochs, batch 64) on 2,000 synthetic
  windows on 2 threads, next to the logistic regression trained for the same epochs and batches.
  Target: <= 60 s. CUDA is used automatically when present.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bci_affect.dsp.montage import VIRTUAL_SITES  # noqa: E402
from bci_affect.models.finetune import TrainConfig, fit, fit_conformal, resolve_device  # noqa: E402
from bci_affect.models.student import LogisticBaseline  # noqa: E402
from bci_affect.models.transfer import AffectModel  # noqa: E402
from bci_affect.processors.sites import SiteFeatures  # noqa: E402
from tests.model.synthetic import EEG_CH_NAMES, FACE_CH_NAMES, make_windows  # noqa: E402


def _time_us(fn, repeats: int) -> tuple[float, float]:
    for _ in range(max(20, repeats // 10)):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return 1e6 * statistics.median(ts), 1e6 * ts[int(0.9 * len(ts))]


def _model(inputs: str) -> AffectModel:
    kw = {"eeg_inputs": inputs, "n_times": 256, "sfreq": 128.0} if inputs != "de" else {}
    return AffectModel(
        len(EEG_CH_NAMES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=EEG_CH_NAMES, **kw
    )


def bench_forward(repeats: int, n_frames: int) -> list[tuple[str, float, float]]:
    torch.set_num_threads(1)
    cal = make_windows(300, seed=1, raw=True, n_frames=n_frames)
    one = make_windows(1, seed=2, raw=True, n_frames=n_frames).batch
    rows = []
    baseline = LogisticBaseline(len(EEG_CH_NAMES), 4).eval()
    x = torch.zeros(4)
    with torch.inference_mode():
        # the cost of one tiny op shows how fast eager torch runs on this machine right now
        reference = _time_us(lambda: x + 1, repeats)
        rows.append(
            (
                "logistic regression (DE)",
                *_time_us(lambda: torch.softmax(baseline(one.eeg_de), -1), repeats),
            )
        )
    for inputs in ("de", "raw", "both"):
        model = _model(inputs)
        model.fit_input_stats(cal.batch)
        model.calibrated.fill_(True)
        fit_conformal(model, cal.batch, cal.labels, coverage=0.9)
        model.eval()
        with torch.inference_mode():
            rows.append(
                (f"AffectModel eeg_inputs={inputs}", *_time_us(lambda m=model: m(one), repeats))
            )
            if inputs == "de":  # the same model on the eager pass, without folded weights
                model.fused_inference = False
                rows.append(
                    (
                        "  same model, eager pass",
                        *_time_us(lambda m=model: m(one), repeats),
                    )
                )
                model.fused_inference = True
    # the default student: montage-free virtual-site features (19 sites x 5 bands)
    sites = AffectModel(
        len(VIRTUAL_SITES), 4, face_ch_names=FACE_CH_NAMES, eeg_ch_names=VIRTUAL_SITES,
        eeg_inputs="sites",
    )  # fmt: skip
    gen = torch.Generator().manual_seed(0)

    def with_sites(b):
        return replace(b, eeg_de=torch.randn(len(b), len(VIRTUAL_SITES), 5, generator=gen))

    sites.fit_input_stats(with_sites(cal.batch))
    sites.calibrated.fill_(True)
    fit_conformal(sites, with_sites(cal.batch), cal.labels, coverage=0.9)
    sites.eval()
    one_sites = with_sites(one)
    with torch.inference_mode():
        rows.append(("AffectModel eeg_inputs=sites", *_time_us(lambda: sites(one_sites), repeats)))
    # and what the signals chain adds per window for it: the montage map and the normalisation
    norm = SiteFeatures()
    de = np.random.default_rng(0).normal(2.0, 0.3, (len(EEG_CH_NAMES), 5))
    names = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
    rows.append(
        ("SiteFeatures per window (8 ch)", *_time_us(lambda: norm(de, names, 1.0), repeats))
    )
    return rows, reference[0]


def _fit_logreg(data, labels, epochs: int, batch_size: int, device: torch.device) -> None:
    model = LogisticBaseline(len(EEG_CH_NAMES), 4).to(device)
    x = data.eeg_de.to(device)
    y = torch.as_tensor(labels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen).to(device)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()


def bench_training(n_train: int, threads: int) -> list[tuple[str, float]]:
    torch.set_num_threads(threads)
    data = make_windows(n_train, seed=3, raw=True)
    cfg = TrainConfig()
    device = resolve_device(None)
    rows = []
    t0 = time.perf_counter()
    _fit_logreg(data.batch, data.labels, cfg.epochs, cfg.batch_size, device)
    rows.append((f"logistic regression, {cfg.epochs} epochs", time.perf_counter() - t0))
    for inputs in ("de", "both"):
        torch.manual_seed(0)
        model = _model(inputs)
        t0 = time.perf_counter()
        fit(model, data.batch, data.labels, cfg)
        rows.append(
            (
                f"AffectModel eeg_inputs={inputs}, {cfg.epochs} epochs ({device.type})",
                time.perf_counter() - t0,
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2000, help="timed forward passes per model")
    parser.add_argument(
        "--frames", type=int, default=60, help="face frames per window (2 s at 30 fps)"
    )
    parser.add_argument("--n-train", type=int, default=2000, help="training windows")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()

    rows, op_us = bench_forward(args.repeats, args.frames)
    base = rows[0][1]
    print(
        f"forward pass, batch 1, 1 thread, inference mode, {args.frames} face frames, 8 EEG channels"
    )
    print(f"(one tiny torch op, x + 1, takes {op_us:.1f} us here; about 1.5-2 us on an idle CPU)")
    print(f"{'model':34s} {'median us':>10s} {'p90 us':>10s} {'x baseline':>11s} {'<= 1 ms':>8s}")
    for name, med, p90 in rows:
        ok = "yes" if med <= 1000 else "NO"
        print(f"{name:34s} {med:10.1f} {p90:10.1f} {med / base:11.1f} {ok:>8s}")
    if not args.skip_training:
        trows = bench_training(args.n_train, args.threads)
        base = trows[0][1]
        print(f"\ntraining on {args.n_train} windows, {args.threads} threads")
        print(f"{'run':52s} {'seconds':>8s} {'x baseline':>11s} {'<= 60 s':>8s}")
        for name, sec in trows:
            ok = "yes" if sec <= 60 else "NO"
            print(f"{name:52s} {sec:8.1f} {sec / base:11.1f} {ok:>8s}")
    print(
        f"\ntorch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, numpy {np.__version__}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
