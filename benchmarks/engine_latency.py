"""End-to-end latency of live inference over LSL: from the push that completes a window to its
prediction arriving on an ``AffectPredictions`` inlet.

Set-up (all on localhost, real liblsl): a publisher pushes a simulated session in real time on
two outlets, ``EEG`` (8 ch at 250 Hz, in chunks of ``--eeg-chunk`` samples, 5 = 20 ms like
BrainFlow's polling) and ``FaceFeatures`` (160 ch, one sample per camera frame at 30 fps), each
sample stamped with its due time on the LSL clock and pushed when due. The engine reads them
through :class:`acquisition.lsl_inlet.LslSource` (clock correction on), scores every window
(4 s, hop 0.5 s) with the default model on the CPU and pushes each prediction on an
``AffectPredictions`` outlet; a separate inlet receives them.

Measured per window:

- ``end-to-end``: arrival on the AffectPredictions inlet minus the wall time (LSL clock) of the
  push that completed the window: the first EEG push holding a sample after the window's end
  and the first face frame after it (a window waits for both; see
  :mod:`bci_affect.processors.windower`), whichever came later;
- ``after window end``: arrival minus the window's end time; adds the wait for those samples
  (up to one EEG chunk and one camera frame);
- the engine's own stages from the records (signals, queue, model, total).

Baseline, measured in the same run: one LSL hop (an extra inlet on the EEG stream: arrival
minus push time of each chunk). The end-to-end path has two hops (data in, predictions out) plus
the engine. The first prediction (model warm-up) is left out. Target: end-to-end p99 < 25 ms.

Run::

    .venv/bin/python benchmarks/engine_latency.py [--seconds 60] [--eeg-chunk 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import threading
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pylsl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.lsl import Outlet  # noqa: E402
from acquisition.lsl_inlet import LslSource, quiet_liblsl  # noqa: E402
from acquisition.simulator import SimulatorConfig, simulate_session  # noqa: E402
from bci_affect.core.chunk import Chunk  # noqa: E402
from bci_affect.core.clock import local_clock  # noqa: E402
from bci_affect.engine import (  # noqa: E402
    Engine,
    EngineConfig,
    PredictionLog,
    predictions_chunk,
    predictions_stream_info,
)
from bci_affect.processors import SignalsConfig  # noqa: E402


def simulated(seconds: float) -> tuple[Chunk, Chunk]:
    """EEG and FaceFeatures of a simulated session at least ``seconds`` long."""
    n_trials = max(1, int(np.ceil(seconds / 35.0)))
    cfg = SimulatorConfig().replace(
        session={"n_trials": n_trials}, artifacts={"line_freq_hz": 50.0}
    )
    s = simulate_session(cfg, seed=2)
    by = {c.info.name: c for c in s.chunks}
    return by["EEG"], by["FaceFeatures"]


def pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="seconds streamed (60)")
    p.add_argument("--eeg-chunk", type=int, default=5, help="EEG samples per push (5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    quiet_liblsl()
    uid = uuid.uuid4().hex[:8]

    eeg, face = simulated(args.seconds + 5)
    t_rel0 = float(eeg.times[0])
    keep_e = eeg.times - t_rel0 < args.seconds
    keep_f = face.times - t_rel0 < args.seconds
    eeg_info = replace(eeg.info, source_id=f"bench-eeg-{uid}", name=f"EEG-{uid}")
    face_info = replace(face.info, source_id=f"bench-face-{uid}", name=f"FaceFeatures-{uid}")
    eeg_out, face_out = Outlet(eeg_info), Outlet(face_info)

    # the engine: LSL in, AffectPredictions out
    log = PredictionLog()
    signals = SignalsConfig.make(line_hz=50.0)
    engine = Engine(
        config=EngineConfig(realtime=True, device=args.device), signals=signals, sinks=[log]
    )
    src = LslSource([f"source_id={eeg_info.source_id}", f"source_id={face_info.source_id}"])
    src.__enter__()
    session = engine.add_session("bench", streams=src.streams)
    pred_info = predictions_stream_info(
        session.classes, name=f"AffectPredictions-{uid}", source_id=f"bench-pred-{uid}"
    )
    pred_out = Outlet(pred_info)
    session.sinks.append(lambda pr: pred_out.push(predictions_chunk([pr], pred_info)))

    # measuring inlets: the predictions, and the baseline hop on the EEG stream
    def inlet(source_id: str) -> pylsl.StreamInlet:
        (found,) = pylsl.resolve_byprop("source_id", source_id, 1, 10.0)
        inl = pylsl.StreamInlet(found, max_buflen=360, processing_flags=pylsl.proc_clocksync)
        inl.time_correction(timeout=5.0)
        inl.open_stream(timeout=5.0)
        return inl

    pred_in = inlet(pred_info.source_id)
    eeg_in = inlet(eeg_info.source_id)
    stop = threading.Event()
    arrivals: list[tuple[float, float]] = []  # (arrival, t_window_end)
    hop: list[tuple[float, float]] = []  # (arrival, last stamp of the chunk)

    def read_predictions() -> None:
        while not stop.is_set():
            sample, _ = pred_in.pull_sample(timeout=0.1)
            if sample is not None:
                arrivals.append((local_clock(), sample[0]))

    def read_eeg() -> None:
        while not stop.is_set():
            _, ts = eeg_in.pull_chunk(timeout=0.1, max_samples=4096, min_samples=1)
            if ts:
                hop.append((local_clock(), ts[-1]))

    readers = [threading.Thread(target=f, daemon=True) for f in (read_predictions, read_eeg)]
    for t in readers:
        t.start()
    feeder = engine.feed(src, session)

    # the publisher, in real time
    t0 = local_clock() + 1.0
    e_times = eeg.times[keep_e] - t_rel0 + t0
    f_times = face.times[keep_f] - t_rel0 + t0
    e_data, f_data = eeg.data[:, keep_e], face.data[:, keep_f]
    pushes = []  # (due, kind, lo, hi)
    for lo in range(0, e_times.size, args.eeg_chunk):
        hi = min(lo + args.eeg_chunk, e_times.size)
        pushes.append((e_times[hi - 1], 0, lo, hi))
    pushes += [(f_times[i], 1, i, i + 1) for i in range(f_times.size)]
    pushes.sort()
    pushed: list[tuple[float, int, float]] = []  # (push wall time, kind, last stamp)
    wake = threading.Event()
    print(
        f"streaming {args.seconds:g} s: EEG 8 ch at 250 Hz in chunks of {args.eeg_chunk}, "
        f"FaceFeatures 160 ch at 30 fps; model {session.model.name} on {engine.device}, "
        f"{args.threads} thread(s)",
        flush=True,
    )
    for due, kind, lo, hi in pushes:
        delay = due - local_clock()
        if delay > 0:
            wake.wait(delay)
        if kind == 0:
            eeg_out.push(Chunk(e_data[:, lo:hi], e_times[lo:hi], eeg_info))
        else:
            face_out.push(Chunk(f_data[:, lo:hi], f_times[lo:hi], face_info))
        pushed.append((local_clock(), kind, float(due)))
    wake.wait(1.5)  # the last windows and predictions
    stop.set()
    src.stop()
    feeder.join(5)
    engine.close()
    src.__exit__(None, None, None)
    for t in readers:
        t.join(2)

    # end-to-end per window
    pw = np.array(pushed)
    e_push, f_push = pw[pw[:, 1] == 0], pw[pw[:, 1] == 1]
    half = 0.5 / eeg.info.sfreq
    e2e, after_end = [], []
    for arrival, t_end in arrivals[1:]:  # the first one includes the model's warm-up
        i = np.searchsorted(e_push[:, 2], t_end + half, side="right")
        j = np.searchsorted(f_push[:, 2], t_end, side="right")
        if i >= len(e_push) or j >= len(f_push):
            continue
        trigger = max(e_push[i, 0], f_push[j, 0])
        e2e.append(1e3 * (arrival - trigger))
        after_end.append(1e3 * (arrival - t_end))
    e2e, after_end = np.array(e2e), np.array(after_end)
    hp = np.array(hop)
    hop_list = []
    for arrival, stamp in hp:  # the push whose last sample carries this stamp (to 0.1 ms)
        k = int(np.searchsorted(e_push[:, 2], stamp))
        near = [i for i in (k - 1, k) if 0 <= i < len(e_push)]
        i = min(near, key=lambda i: abs(e_push[i, 2] - stamp))
        if abs(e_push[i, 2] - stamp) < 1e-4:
            hop_list.append(1e3 * (arrival - e_push[i, 0]))
    hop_ms = np.array(hop_list)
    recs = list(log.records)[1:]
    stages = {
        st: np.array([r["latency_ms"][st] for r in recs])
        for st in ("signals", "queue", "model", "total")
    }
    skipped = sum(r["n_skipped"] for r in recs)

    print(
        f"\n{len(e2e)} windows scored and received (of {session.stats.n_windows}); "
        f"{skipped} skipped; errors: {engine.errors or 'none'}"
    )
    print(f"{'latency (ms)':<34}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    rows = [
        ("LSL hop, EEG chunk (baseline)", hop_ms),
        ("end-to-end, push -> prediction", e2e),
        ("prediction after window end", after_end),
    ] + [(f"  engine stage: {k}", v) for k, v in stages.items()]
    for name, x in rows:
        print(
            f"{name:<34}{pct(x, 50):8.2f}{pct(x, 90):8.2f}{pct(x, 99):8.2f}"
            f"{(x.max() if x.size else float('nan')):8.2f}"
        )
    base = pct(hop_ms, 50)
    print(
        f"\nend-to-end p50 / (2 x LSL hop p50) = {pct(e2e, 50) / (2 * base):.1f}; "
        f"target end-to-end p99 < 25 ms: {'met' if pct(e2e, 99) < 25 else 'NOT met'} "
        f"({pct(e2e, 99):.2f} ms)"
    )
    pred_out.close()
    eeg_out.close()
    face_out.close()


if __name__ == "__main__":
    main()
