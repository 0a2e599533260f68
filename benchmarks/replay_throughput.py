"""In-process XDF replay throughput, in multiples of real time, against pyxdf's loader.

Writes synthetic recordings with the project's XDF writer into a temporary folder (EEG plus a
marker stream, 10 minutes by default: 8 ch at 250 Hz and 32 ch at 1 kHz, float32), then
measures on each file, in the same run:

- ``pyxdf.load_xdf`` (clock synchronisation on, dejittering off): the baseline;
- ``acquisition.xdf.load_xdf``: the whole file as one chunk per stream;
- ``XdfSource`` replay: every 0.1 s chunk of every stream, as a pipeline consumes them.

The real LabRecorder file ``../shared/data/xdf/bci_essentials_switch_example.xdf`` (16 ch,
256 Hz, 134 s; LabRecorder leaves out most timestamps, the slower layout to decode) is
measured too when present. Each timing is the best of ``--repeats`` runs.

Run::

    .venv/bin/python benchmarks/replay_throughput.py [--minutes 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyxdf

from acquisition.xdf import XdfSource, load_xdf
from acquisition.xdf_writer import write_xdf
from bci_affect.core import Chunk, StreamInfo

ROOT = Path(__file__).resolve().parents[1]
REAL_FILE = ROOT.parent / "shared" / "data" / "xdf" / "bci_essentials_switch_example.xdf"


def make_recording(path: Path, n_chans: int, sfreq: float, minutes: float, seed: int = 0) -> Path:
    """Write ``minutes`` of ``n_chans`` float32 EEG at ``sfreq`` Hz plus a marker every 2 s."""
    rng = np.random.default_rng(seed)
    n = int(round(minutes * 60 * sfreq))
    t0 = 1000.0
    times = t0 + np.arange(n) / sfreq + rng.normal(0, 2e-5, n)  # a little jitter, like a board
    times.sort()
    info = StreamInfo(
        "EEG",
        "EEG",
        sfreq,
        [f"EEG{i + 1}" for i in range(n_chans)],
        ["microvolts"] * n_chans,
        f"bench-{n_chans}x{sfreq:g}",
        "float32",
    )
    tt = np.arange(n) / sfreq
    data = (10 * np.sin(2 * np.pi * 10 * tt)[None, :] + rng.standard_normal((n_chans, n))).astype(
        np.float32
    )
    marker_times = t0 + np.arange(0, minutes * 60, 2.0)
    markers = StreamInfo(
        "Markers", "Markers", 0.0, ["event"], channel_format="string", source_id="m"
    )
    marker_data = np.array(
        [[f'{{"event": "trial_start", "trial": {k}}}' for k in range(marker_times.size)]],
        dtype=object,
    )
    chunk_samples = max(1, int(sfreq / 10))  # 0.1 s per Samples chunk, like a live recorder
    return write_xdf(
        path,
        [Chunk(data, times, info), Chunk(marker_data, marker_times, markers)],
        chunk_samples=chunk_samples,
    )


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run_pyxdf(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyxdf.load_xdf(str(path), synchronize_clocks=True, dejitter_timestamps=False)


def run_load(path: Path) -> None:
    load_xdf(path)


def run_replay(path: Path) -> int:
    n = 0
    with XdfSource(path, chunk_s=0.1) as source:
        for chunk in source:
            n += chunk.n_times
    return n


def duration_s(path: Path) -> float:
    chunks = load_xdf(path)
    return max(c.times[-1] for c in chunks if c.n_times) - min(
        c.times[0] for c in chunks if c.n_times
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="recording length (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N runs (default 3)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for n_chans, sfreq in ((8, 250.0), (32, 1000.0)):
            path = Path(tmp) / f"eeg_{n_chans}ch_{sfreq:g}Hz.xdf"
            t = time.perf_counter()
            make_recording(path, n_chans, sfreq, args.minutes)
            print(
                f"wrote {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
                f"{time.perf_counter() - t:.1f} s"
            )
            files.append((f"{n_chans} ch @ {sfreq:g} Hz (writer)", path))
        if REAL_FILE.is_file():
            files.append(("16 ch @ 256 Hz (LabRecorder)", REAL_FILE))
        for label, path in files:
            dur = duration_s(path)
            t_base = best_of(args.repeats, lambda p=path: run_pyxdf(p))
            t_load = best_of(args.repeats, lambda p=path: run_load(p))
            t_replay = best_of(args.repeats, lambda p=path: run_replay(p))
            rows.append((label, dur, path.stat().st_size / 1e6, t_base, t_load, t_replay))

    head = (
        f"{'recording':30} {'length s':>8} {'MB':>5} | {'pyxdf.load_xdf':>16} | "
        f"{'load_xdf':>16} | {'XdfSource replay':>18} | {'vs pyxdf':>8}"
    )
    print()
    print(head)
    print("-" * len(head))
    for label, dur, mb, tb, tl, tr in rows:
        print(
            f"{label:30} {dur:8.0f} {mb:5.0f} | {tb:6.3f} s {dur / tb:6.0f}x | "
            f"{tl:6.3f} s {dur / tl:6.0f}x | {tr:6.3f} s {dur / tr:8.0f}x | {tb / tr:7.1f}x"
        )
    print(
        "\n(Nx = seconds of recording per second of compute; 'vs pyxdf' = pyxdf time / replay time)"
    )


if __name__ == "__main__":
    main()
