"""Outlet → inlet latency of LSL on localhost: raw pylsl against :class:`LslSource`.

A publisher process pushes single samples at ``--rate`` Hz, each stamped with ``local_clock()``
at push. The consumer measures ``local_clock()`` when the sample reaches it; the difference is
the latency (same machine, same clock). The baseline pulls with pylsl directly
(``pull_sample``, no post-processing); ``LslSource`` adds clock correction, a reader thread, a
queue and :class:`~bci_affect.core.chunk.Chunk` construction. Target: p99 < 5 ms.

Run::

    .venv/bin/python benchmarks/lsl_latency.py                 # 2500 samples at 250 Hz, 8 and 32 ch
    .venv/bin/python benchmarks/lsl_latency.py --n-samples 5000 --channels 8 32 64
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pylsl  # noqa: E402

from acquisition.lsl_inlet import LslSource, quiet_liblsl  # noqa: E402

TARGET_P99_MS = 5.0
WARMUP = 50  # samples discarded while connections and clock correction settle

PUBLISHER = textwrap.dedent(
    """
    import sys, time, pylsl
    pylsl.set_config_content("[log]\\nlevel = -1\\n")  # no liblsl info lines
    sid, n_chans, rate, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    info = pylsl.StreamInfo("Bench" + sid, "EEG", n_chans, rate, "float32", sid)
    out = pylsl.StreamOutlet(info)
    if not out.wait_for_consumers(30):
        sys.exit(3)
    time.sleep(0.5)  # let the consumer finish connecting before the clock starts
    x = [0.0] * n_chans
    t0 = pylsl.local_clock()
    for i in range(n):
        due = t0 + i / rate
        while (wait := due - pylsl.local_clock()) > 0:
            time.sleep(wait)
        x[0] = float(i)
        out.push_sample(x, pylsl.local_clock())
    sys.stdin.read()  # keep the outlet until the consumer is done
    """
)


def start_publisher(n_chans: int, rate: float, n: int) -> tuple[subprocess.Popen, str]:
    sid = f"bench-{uuid.uuid4().hex[:10]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, sid, str(n_chans), str(rate), str(n)],
        stdin=subprocess.PIPE,
        text=True,
    )
    return proc, sid


def measure_pylsl(sid: str, n: int) -> np.ndarray:
    (info,) = pylsl.resolve_byprop("source_id", sid, 1, 10)
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(10)
    lat = np.empty(n)
    for i in range(n):
        _, ts = inlet.pull_sample(timeout=5.0)
        now = pylsl.local_clock()
        if ts is None:
            raise RuntimeError(f"publisher stopped after {i} samples")
        lat[i] = now - ts
    return lat


def measure_source(sid: str, n: int) -> np.ndarray:
    lat: list[float] = []
    with LslSource(f"source_id={sid}", timeout_s=10) as src:
        for chunk in src:
            now = pylsl.local_clock()
            lat.extend(now - chunk.times)
            if len(lat) >= n:
                break
    return np.asarray(lat[:n])


def run(method: str, n_chans: int, rate: float, n: int) -> np.ndarray:
    proc, sid = start_publisher(n_chans, rate, n + WARMUP)
    try:
        fn = measure_pylsl if method == "pylsl pull_sample" else measure_source
        lat = fn(sid, n + WARMUP)[WARMUP:]
    finally:
        proc.stdin.close()
        proc.wait(10)
    return lat * 1e3  # ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=2500)
    parser.add_argument("--rate", type=float, default=250.0)
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    quiet_liblsl()

    methods = ("pylsl pull_sample", "LslSource")
    print(
        f"LSL latency on localhost, {args.n_samples} single samples at {args.rate:g} Hz "
        f"(liblsl {pylsl.library_version()}, pylsl {pylsl.__version__})"
    )
    header = f"{'method':<18} {'ch':>3} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99/base':>9}  target"
    print(header)
    print("-" * len(header))
    for n_chans in args.channels:
        base_p99 = None
        for method in methods:
            lat = run(method, n_chans, args.rate, args.n_samples)
            p50, p99, mx = np.percentile(lat, 50), np.percentile(lat, 99), lat.max()
            base_p99 = base_p99 or p99
            ok = "ok" if p99 < TARGET_P99_MS else f"MISSED (p99 >= {TARGET_P99_MS:g} ms)"
            print(
                f"{method:<18} {n_chans:>3} {p50:>8.3f} {p99:>8.3f} {mx:>8.3f} "
                f"{p99 / base_p99:>9.2f}  {ok}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
