"""Per-hop cost of the signals chain (preprocess + window + quality + features) on one core.

4 s windows, 0.5 s hop; 8 channels at 250 Hz and 32 channels at 1 kHz. Each hop feeds 0.5 s of
new samples to :class:`bci_affect.processors.SignalPipeline` and times the call (which filters
the new samples, cuts the window, scores it and computes its features, including the tensor).

Baseline, measured in the same run: for every window, re-run ``mne.filter.filter_data`` (the
same causal IIR chain, ``phase='forward'``) over the window plus ``--history-s`` seconds before
it (so its filter transient has died out and the two should agree), then ``scipy.signal.welch``
on the raw and filtered window, then the same scores and features. The table gives both
costs (wall clock; ``cpu p99`` is the thread's CPU time, which leaves out the time the process
waited while other processes ran on its core), their ratio and the largest relative difference
between the two paths' features. The load average is printed before and after: on a shared
machine, wall-clock percentiles mostly measure the other processes.

Run: ``.venv/bin/python benchmarks/signals_per_hop.py [--seconds 120] [--cpu N]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: before numpy loads its BLAS

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from bci_affect.core import Chunk, StreamInfo  # noqa: E402
from bci_affect.dsp import quality as dq  # noqa: E402
from bci_affect.dsp.features import band_features_from_psd  # noqa: E402
from bci_affect.processors import SignalPipeline, SignalsConfig  # noqa: E402
from bci_affect.processors.quality import quality_from_measures  # noqa: E402

NAMES_32 = (
    "Fp1",
    "Fp2",
    "AF3",
    "AF4",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "FC5",
    "FC1",
    "FC2",
    "FC6",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "CP5",
    "CP1",
    "CP2",
    "CP6",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "PO3",
    "PO4",
    "O1",
    "Oz",
    "O2",
)


def synthetic(n_chans: int, sfreq: float, seconds: float, seed: int = 0) -> Chunk:
    """Brown + white noise, a 10 Hz rhythm, 50 Hz mains and OpenBCI-like DC offsets (µV)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sfreq)
    t = np.arange(n) / sfreq
    x = np.cumsum(rng.standard_normal((n_chans, n)), axis=1) * 0.3
    x += rng.standard_normal((n_chans, n)) * 3.0
    x += 8.0 * np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 6.3, (n_chans, 1)))
    x += 20.0 * np.sin(2 * np.pi * 50.0 * t)
    x += rng.uniform(-60_000, 60_000, (n_chans, 1))
    names = NAMES_32[:n_chans] if n_chans <= 32 else tuple(f"EEG{i}" for i in range(n_chans))
    info = StreamInfo(
        "EEG", "EEG", sfreq, names, ("microvolts",) * n_chans, "bench", channel_format="double64"
    )
    return Chunk(x, 1000.0 + t, info)


class Naive:
    """Every window from scratch: MNE filtering over the window and its history, then Welch.

    Uses the same filter chain (so, with enough history, the same filtered window), the same
    Welch settings and the same score and feature formulas as the streaming path.
    """

    def __init__(self, eeg: Chunk, cfg: SignalsConfig, history_s: float) -> None:
        from bci_affect.dsp.filters import design_chain
        from bci_affect.dsp.spectrum import rfft_freqs

        self.eeg, self.cfg = eeg, cfg
        sfreq = eeg.sfreq
        pc, qc = cfg.preprocess, cfg.quality
        self.sos = design_chain(
            sfreq,
            l_freq_hz=pc.l_freq_hz,
            h_freq_hz=pc.h_freq_hz,
            notch_hz=pc.notch_hz,
            order=pc.order,
            notch_width_hz=pc.notch_width_hz,
        )
        self.seg = int(round(qc.welch_seg_s * sfreq))
        self.freqs = rfft_freqs(sfreq, self.seg)
        self.weights = dq.spectral_weights(
            self.freqs, line_hz=qc.line_hz, emg_band_hz=qc.emg_band_hz
        )
        self.frontal = [i for i, n in enumerate(eeg.ch_names) if n.lower().startswith(("fp", "af"))]
        self.smooth = int(round(qc.blink_smooth_s * sfreq))
        self.n_hist = int(round(history_s * sfreq))

    def __call__(self, first: int, n: int):
        import mne
        from scipy import signal

        eeg, sfreq, seg = self.eeg, self.eeg.sfreq, self.seg
        x = eeg.data[:, max(0, first - self.n_hist) : first + n]
        x = x - x[:, :1]  # start from rest, as the streaming filter starts at steady state
        filt = mne.filter.filter_data(
            x,
            sfreq,
            None,
            None,
            method="iir",
            iir_params={"sos": self.sos},
            phase="forward",
            verbose=False,
        )[:, -n:]
        raw = eeg.data[:, first : first + n]
        _, psd_raw = signal.welch(raw, sfreq, nperseg=seg, noverlap=seg // 2)
        _, psd = signal.welch(filt, sfreq, nperseg=seg, noverlap=seg // 2)
        q = quality_from_measures(
            lo=raw.min(-1),
            hi=raw.max(-1),
            band_power=psd_raw @ self.weights,
            blink_amp=dq.blink_amplitude(filt[self.frontal], self.smooth),
            frontal=self.frontal,
            complete=True,
            config=self.cfg.quality,
        )
        bf = band_features_from_psd(psd, self.freqs, self.cfg.features.band_dict)
        _ = np.where(q.bad[:, None], np.nan, bf.de), filt.astype(np.float32)
        return bf.power


def run(eeg: Chunk, cfg: SignalsConfig, history_s: float):
    """Feed hops to the streaming chain; time it, and the naive recomputation of each window
    right after it (interleaved, so both see the same machine load)."""
    hop = int(round(cfg.window.hop_s * eeg.sfreq))
    pipe, naive = SignalPipeline(cfg), Naive(eeg, cfg, history_s)
    t_fast, t_naive, diffs = [], [], []
    cpu = time.thread_time
    for a in range(0, eeg.n_times, hop):
        chunk = Chunk(eeg.data[:, a : a + hop], eeg.times[a : a + hop], eeg.info)
        t, c = time.perf_counter(), cpu()
        out = pipe(chunk)
        dt, dc = time.perf_counter() - t, cpu() - c
        if not out:
            continue
        t_fast.append((dt, dc))
        for r in out:
            t, c = time.perf_counter(), cpu()
            power = naive(r.window.first_index, r.window.n_times)
            t_naive.append((time.perf_counter() - t, cpu() - c))
            diffs.append(np.max(np.abs(r.features.power - power) / np.abs(power)))
    return np.array(t_fast).T, np.array(t_naive).T, float(np.max(diffs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="signal length (s)")
    parser.add_argument(
        "--history-s",
        type=float,
        default=10.0,
        help="history the baseline filters before each window (s)",
    )
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (default: first)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        where = f"pinned to CPU {cpu}"
    else:
        where = "not pinned"
    print(f"signals per hop: 4 s windows, 0.5 s hop, {args.seconds:g} s of signal, {where}")
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    header = (
        f"{'setup':<11} {'path':<10} {'median ms':>9} {'p99 ms':>8} {'max ms':>8} "
        f"{'cpu median':>10} {'cpu p99':>8} {'windows':>7}"
    )
    print(header)
    print("-" * len(header))
    summary = []
    for n_chans, sfreq in ((8, 250.0), (32, 1000.0)):
        eeg = synthetic(n_chans, sfreq, args.seconds)
        cfg = SignalsConfig.make(line_hz=50.0)
        run(synthetic(n_chans, sfreq, 8.0, seed=1), cfg, args.history_s)  # warm-up: imports
        (t_fast, c_fast), (t_naive, c_naive), diff = run(eeg, cfg, args.history_s)
        setup = f"{n_chans}ch@{sfreq:g}Hz"
        for name, t, c in (("streaming", t_fast, c_fast), ("naive", t_naive, c_naive)):
            print(
                f"{setup:<11} {name:<10} {np.median(t) * 1e3:9.3f} "
                f"{np.percentile(t, 99) * 1e3:8.3f} {t.max() * 1e3:8.3f} "
                f"{np.median(c) * 1e3:10.3f} {np.percentile(c, 99) * 1e3:8.3f} {t.size:7d}"
            )
        summary.append(
            (
                setup,
                np.median(t_naive) / np.median(t_fast),
                np.median(c_naive) / np.median(c_fast),
                np.percentile(t_naive, 99) / np.percentile(t_fast, 99),
                np.percentile(t_fast, 99) * 1e3,
                np.percentile(c_fast, 99) * 1e3,
                diff,
            )
        )
    print()
    print(
        f"{'setup':<11} {'speed-up (median)':>17} {'(cpu median)':>12} {'(p99)':>7} "
        f"{'p99 < 2 ms':>10} {'cpu p99 < 2 ms':>14} {'max rel. diff of band power':>28}"
    )
    for setup, r_med, r_cpu, r_p99, p99, cpu_p99, diff in summary:
        print(
            f"{setup:<11} {r_med:16.1f}x {r_cpu:11.1f}x {r_p99:6.1f}x "
            f"{str(p99 < 2.0):>10} {str(cpu_p99 < 2.0):>14} {diff:28.2e}"
        )
    print("load average (1, 5, 15 min) after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
