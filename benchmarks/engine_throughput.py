"""Inference engine throughput: replay in multiples of real time, and batched multi-session
windows per second (CPU here; ready for a GPU with ``--device cuda``).

Part 1, replay (``bci_affect.engine.Engine(realtime=False)``, the path of ``bci-affect replay
--model`` and ``bci-affect demo``): a simulated session (EEG 8 ch at 250 Hz, FaceFeatures 160
ch at 30 fps, Markers; ``--minutes`` long) is written with the project's simulator, then
replayed in process, measured in the same run at three depths:

- ``read``: the XDF source alone (every chunk, nothing else): the baseline;
- ``signals``: + the signals chain (filters, aligned windows, quality, features);
- ``engine``: + the model and the prediction records: the whole job.

Part 2, multi-session scoring (``--sessions``, ``--batch``): the session's windows are cut once,
then ``S`` sessions hand them to one engine (``Session.push_windows``), which batches windows of
all sessions into one forward pass per frame count and builds every prediction record:
windows per second through the engine, next to the bare forward pass of the same model on
pre-built batches of the same size (the baseline: no input assembly, no records).
``--realtime`` feeds the sessions from one thread each into the live worker (latest-wins
queues sized not to drop) instead of the in-order scheduler.

Each timing is the best of ``--repeats``. Target: replay >= 200x real time on this CPU;
multi-session >= 10,000 windows/s on an H100.

Run::

    .venv/bin/python benchmarks/engine_throughput.py [--minutes 5] [--device cuda]
        [--sessions 1 4 16 64] [--batch 64 256 1024] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.simulator import SimulatorConfig, simulate_session, write_session  # noqa: E402
from acquisition.xdf import XdfSource  # noqa: E402
from bci_affect.engine import Engine, EngineConfig, resolve_device  # noqa: E402
from bci_affect.engine.inference import window_inputs  # noqa: E402
from bci_affect.processors import SignalPipeline, SignalsConfig  # noqa: E402

SIGNALS = SignalsConfig.make(line_hz=50.0)


def make_session(folder: Path, minutes: float) -> Path:
    n_trials = max(1, round(minutes * 60 / 35))  # a trial + rest is about 35 s
    cfg = SimulatorConfig().replace(
        session={"name": "bench", "n_trials": n_trials}, artifacts={"line_freq_hz": 50.0}
    )
    return write_session(simulate_session(cfg, seed=5), folder / "bench.xdf")


def best(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def replay_table(path: Path, repeats: int, device: str, chunk_s: float) -> None:
    src = XdfSource(path, chunk_s=chunk_s)
    src.load()
    span = src.t_last - src.t_first

    def read():
        return sum(c.n_times for c in src)

    def signals():
        pipe = SignalPipeline(SIGNALS)
        n = 0
        for c in src:
            n += len(pipe(c))
        return n + len(pipe.flush())

    model = []

    def engine():
        engine = Engine(config=EngineConfig(realtime=False, device=device), signals=SIGNALS)
        session = engine.add_session("bench", streams=src.streams)
        model[:] = [session.model.name]
        for c in src:
            session.push(c)
        engine.close()
        return session.stats.n_scored

    rows = []
    for name, fn in (("read", read), ("signals", signals), ("engine", engine)):
        cpu0 = time.process_time()
        dt, n = best(fn, repeats)
        cpu = (time.process_time() - cpu0) / repeats
        rows.append((name, dt, cpu, n))
    base = rows[0][1]
    print(
        f"\nreplay of {span:.0f} s of EEG + FaceFeatures + Markers ({path.stat().st_size / 1e6:.1f}"
        f" MB), chunks of {chunk_s:g} s, device {device}, best of {repeats}"
    )
    print(
        f"{'depth':<9}{'wall s':>9}{'CPU s':>9}{'x real time':>13}{'x (CPU time)':>14}"
        f"{'items':>8}{'vs read':>9}"
    )
    for name, dt, cpu, n in rows:
        print(
            f"{name:<9}{dt:9.3f}{cpu:9.3f}{span / dt:13.0f}{span / cpu:14.0f}{n:8d}{dt / base:9.1f}"
        )
    print(
        f"model: {model[0]}. items: samples (read), windows (signals, engine). "
        "Target: engine >= 200x real time."
    )


def windows_of(path: Path) -> list:
    pipe = SignalPipeline(SIGNALS)
    out = []
    with XdfSource(path, chunk_s=0.5) as src:
        streams = src.streams
        for c in src:
            out += pipe(c)
    return streams, out + pipe.flush()


def multi_session_table(
    path: Path, sessions: list[int], batches: list[int], repeats: int, device: str, realtime: bool
) -> None:
    streams, windows = windows_of(path)
    dev = resolve_device(device)
    probe = Engine(config=EngineConfig(realtime=False, device=device), signals=SIGNALS)
    name = probe.add_session("probe", streams=streams).model.name
    probe.close()
    print(
        f"\nmulti-session scoring with {name}: {len(windows)} windows per session, device {dev}"
        f"{' (live worker)' if realtime else ' (in-order)'}, best of {repeats}"
    )
    print(
        f"{'sessions':>8}{'batch':>7}{'windows':>9}{'engine win/s':>14}{'forward win/s':>15}"
        f"{'engine/forward':>16}{'batches':>10}"
    )
    for b in batches:
        # baseline: the bare forward pass on ready batches of b windows (same frame count)
        engine = Engine(config=EngineConfig(realtime=False, device=device), signals=SIGNALS)
        s = engine.add_session("probe", streams=streams)
        loaded = s.model
        engine.close()
        by_frames: dict[int, list] = {}
        for w in windows:
            by_frames.setdefault(w.window.face.shape[0], []).append(w)
        group = max(by_frames.values(), key=len)
        reps = (b + len(group) - 1) // len(group)
        batch = window_inputs(loaded, (group * reps)[:b]).to(dev)

        def forward(batch=batch, loaded=loaded):
            with torch.inference_mode():
                out = loaded.model(batch)
                out.probs.cpu()

        forward()
        n_fwd = max(3, 2048 // b)
        t_fwd, _ = best(lambda forward=forward, n=n_fwd: [forward() for _ in range(n)], repeats)
        fwd_rate = n_fwd * b / t_fwd
        for n_sessions in sessions:

            def run(n_sessions=n_sessions, b=b):
                cfg = EngineConfig(
                    realtime=realtime,
                    device=device,
                    max_batch=b,
                    max_pending=len(windows) + 1,
                )
                engine = Engine(config=cfg, signals=SIGNALS)
                ss = [engine.add_session(f"S{i}", streams=streams) for i in range(n_sessions)]
                if realtime:
                    threads = [threading.Thread(target=s.push_windows, args=(windows,)) for s in ss]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                else:
                    for k in range(0, len(windows), 8):  # sessions interleave, 8 windows a turn
                        for s in ss:
                            s.push_windows(windows[k : k + 8])
                engine.close()
                st = [s.stats for s in ss]
                assert sum(x.n_skipped for x in st) == 0
                return sum(x.n_scored for x in st), engine.n_batches

            dt, (n, n_forwards) = best(run, repeats)
            rate = n / dt
            print(
                f"{n_sessions:8d}{b:7d}{n:9d}{rate:14.0f}{fwd_rate:15.0f}{rate / fwd_rate:16.2f}"
                f"{n_forwards:10d}"
            )
    print("Target on an H100: >= 10,000 windows/s (engine win/s).")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="simulated session length (5)")
    p.add_argument("--recording", type=Path, help="use this XDF instead of simulating one")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunk-s", type=float, default=0.5, help="replay chunk length (0.5)")
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    p.add_argument("--realtime", action="store_true", help="part 2 through the live worker")
    p.add_argument("--skip-replay", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    print(
        f"torch {torch.__version__}, device {dev}"
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
        + f", {args.threads} CPU thread(s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = args.recording or make_session(Path(tmp), args.minutes)
        if not args.skip_replay:
            replay_table(path, args.repeats, str(dev), args.chunk_s)
        multi_session_table(path, args.sessions, args.batch, args.repeats, str(dev), args.realtime)


if __name__ == "__main__":
    main()
