"""Personalisation during a calibration session: how long a round takes, and what it does to
live inference latency.

1. Round time: :func:`calibration.personalise.personalise_round` on a subject with about 100
   labelled windows (answers over the sample recording, from a real SQLite store), run in the
   session's warm worker process (:class:`calibration.personalise.Personaliser`), as the
   session does: from submit to the new checkpoint on disk. Target: <= 5 s on CPU.
2. Live latency: the sample recording replayed in real time through LSL (Player -> LslSource
   -> Engine, the live code path), the engine's per-window latency (chunk arrival to
   prediction, ``latency_ms.total``) measured twice in the same run: with no round running
   (baseline), then with rounds running back to back in the worker. Target: p99 within 20 %
   of the baseline.

Run::

    .venv/bin/python benchmarks/calibration_personalise.py [--rounds 5] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from acquisition.lsl_inlet import LslSource, quiet_liblsl  # noqa: E402
from acquisition.player import Player  # noqa: E402
from bci_affect.engine import Engine, EngineConfig  # noqa: E402
from calibration.personalise import Personaliser  # noqa: E402
from tests.calibration.util import DEMO, labelled_store, start_model  # noqa: E402


def round_times(tmp: Path, n_rounds: int) -> tuple[list[float], int]:
    store, n = labelled_store(tmp / "store.sqlite", n_windows=100)
    parent = start_model(tmp / "v0")
    worker = Personaliser().start()
    worker.submit(parent, tmp / "warm", store, "S01").result()  # the first round imports
    times = []
    for i in range(n_rounds):
        t0 = time.perf_counter()
        worker.submit(parent, tmp / f"v{i + 1}", store, "S01").result()
        times.append(time.perf_counter() - t0)
    worker.close()
    return times, n


def live_latency(seconds: float, personalise: tuple | None) -> np.ndarray:
    """Engine latency (ms) of every window of ``seconds`` of real-time replay; with rounds
    running back to back when ``personalise`` = (parent, out_dir, store) is given."""
    lat: list[float] = []
    engine = Engine(None, config=EngineConfig(realtime=True, device="cpu"))
    player = Player(DEMO, speed=1.0, wait_for_consumers_s=10.0, source_id_prefix="bench")
    player.start()
    stop = threading.Event()
    n_rounds = [0]

    def rounds() -> None:
        worker = Personaliser().start()
        parent, out, store = personalise
        while not stop.is_set():
            worker.submit(parent, out / f"r{n_rounds[0]}", store, "S01").result()
            n_rounds[0] += 1
        worker.close()

    trainer = threading.Thread(target=rounds, daemon=True) if personalise else None
    try:
        with LslSource([f"source_id={s.source_id}" for s in player.streams]) as src:
            session = engine.add_session(
                "bench",
                streams=src.streams,
                sinks=[lambda p: lat.append(p.latency_ms["total"])],
            )
            if trainer is not None:
                trainer.start()
            feeder = engine.feed(src, session)
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end and player.running:
                stop.wait(0.1)
            src.stop()
            feeder.join(5.0)
    finally:
        stop.set()
        player.stop()
        engine.close()
        if trainer is not None:
            trainer.join(30.0)
    print(f"  {len(lat)} windows" + (f", {n_rounds[0]} rounds" if personalise else ""))
    return np.asarray(lat[2:])  # the first windows include the model's warm-up


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=30.0, help="per live condition")
    args = ap.parse_args()
    torch.set_num_threads(1)
    quiet_liblsl()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        times, n = round_times(tmp, args.rounds)
        print(
            f"personalisation round on {n} labelled windows (worker process, 1 thread): "
            f"median {np.median(times):.2f} s, max {max(times):.2f} s over {len(times)} rounds "
            "(target <= 5 s)"
        )
        store, _ = labelled_store(tmp / "live.sqlite", n_windows=100)
        parent = start_model(tmp / "live-v0")
        print("live inference, no personalisation:")
        base = live_latency(args.seconds, None)
        print("live inference, rounds running back to back:")
        busy = live_latency(args.seconds, (parent, tmp, store))
    for name, x in (("baseline", base), ("personalising", busy)):
        print(
            f"{name:>14}: latency p50 {np.percentile(x, 50):.2f} ms, "
            f"p99 {np.percentile(x, 99):.2f} ms ({x.size} windows)"
        )
    ratio = np.percentile(busy, 99) / np.percentile(base, 99)
    print(f"p99 ratio personalising / baseline: {ratio:.2f} (target <= 1.20)")


if __name__ == "__main__":
    main()
