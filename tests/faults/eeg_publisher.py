"""A stand-alone LSL EEG publisher for the fault tests: synthetic EEG in real time, with faults
injected on request.

Run as a separate process::

    python tests/faults/eeg_publisher.py NAME SOURCE_ID [--sfreq 250] [--n-chans 8]

It publishes ``NAME`` (type EEG, µV, float32, the Cyton montage Fp1,Fp2,C3,C4,P7,P8,O1,O2, or
its first ``--n-chans`` channels),
pushes 5-sample chunks stamped on a regular grid of this machine's LSL clock, and prints
``ready T0`` once the outlet exists. Commands on stdin, one per line, take effect on the next
sample due:

``nan S`` / ``inf S``
    every channel NaN (or +inf) for S seconds (a driver that emits garbage);
``flat CH S`` / ``rail CH S``
    channel CH constant at 0 µV (a lead that came off) or at +187,500 µV (the Cyton's rail);
``quit``
    close the outlet and exit.

After the last sample of a fault it prints ``fault KIND T_FIRST T_LAST`` (LSL clock, seconds).
"""

from __future__ import annotations

import argparse
import math
import sys
import threading

import numpy as np
import pylsl

CH_NAMES = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
RAIL_UV = 187_500.0
CHUNK = 5


def _commands(pending: list, lock: threading.Lock, quit_: threading.Event) -> None:
    """Read stdin commands into ``pending`` (reader thread)."""
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        with lock:
            pending.append(words)
    quit_.set()


def _signal(rng: np.random.Generator, n0: int, n: int, sfreq: float) -> np.ndarray:
    """Synthetic EEG (µV), shape (n_chans, n): 10 Hz alpha, 6 Hz theta and white noise."""
    t = (n0 + np.arange(n)) / sfreq
    k = np.arange(len(CH_NAMES))[:, None]
    alpha = 12.0 * np.sin(2 * np.pi * 10.0 * t + k)
    theta = 6.0 * np.sin(2 * np.pi * 6.0 * t + 0.5 * k)
    return alpha + theta + 4.0 * rng.standard_normal((len(CH_NAMES), n))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("source_id")
    ap.add_argument("--sfreq", type=float, default=250.0)
    ap.add_argument("--n-chans", type=int, default=len(CH_NAMES))
    args = ap.parse_args()
    sfreq = args.sfreq
    pylsl.set_config_content("[log]\nlevel = -1\n")  # liblsl's INFO lines off, as bci-affect
    names = CH_NAMES[: args.n_chans]
    info = pylsl.StreamInfo(args.name, "EEG", len(names), sfreq, pylsl.cf_float32, args.source_id)
    chans = info.desc().append_child("channels")
    for ch in names:
        c = chans.append_child("channel")
        c.append_child_value("label", ch)
        c.append_child_value("unit", "microvolts")
        c.append_child_value("type", "EEG")
    outlet = pylsl.StreamOutlet(info, CHUNK)
    rng = np.random.default_rng(0)
    t0 = pylsl.local_clock()
    print(f"ready {t0:.6f}", flush=True)
    pending: list[list[str]] = []
    lock = threading.Lock()
    quit_ = threading.Event()
    threading.Thread(target=_commands, args=(pending, lock, quit_), daemon=True).start()
    active: list[dict] = []  # faults in progress: kind, channel, first/last sample
    n = 0
    while not quit_.is_set():
        due = t0 + (n + CHUNK) / sfreq
        wait = due - pylsl.local_clock()
        if wait > 0:
            quit_.wait(wait)
        with lock:
            for words in pending:
                kind, *rest = words
                ch = CH_NAMES.index(rest[0]) if kind in ("flat", "rail") else None
                n_fault = int(math.ceil(float(rest[-1]) * sfreq))
                active.append({"kind": kind, "ch": ch, "first": n, "end": n + n_fault})
            pending.clear()
        x = _signal(rng, n, CHUNK, sfreq)[: len(names)]
        for f in active:
            lo, hi = max(f["first"], n) - n, min(f["end"], n + CHUNK) - n
            if lo >= hi:
                continue
            rows = slice(None) if f["ch"] is None else f["ch"]
            value = {"nan": np.nan, "inf": np.inf, "flat": 0.0, "rail": RAIL_UV}[f["kind"]]
            x[rows, lo:hi] = value
        stamps = t0 + (n + np.arange(CHUNK)) / sfreq
        outlet.push_chunk(np.ascontiguousarray(x.T, dtype=np.float32), stamps.tolist())
        n += CHUNK
        for f in [f for f in active if f["end"] <= n]:
            active.remove(f)
            first, last = t0 + f["first"] / sfreq, t0 + (f["end"] - 1) / sfreq
            print(f"fault {f['kind']} {first:.6f} {last:.6f}", flush=True)
    del outlet


if __name__ == "__main__":
    main()
