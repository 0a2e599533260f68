"""Soak run: hours of EEG + FaceFeatures through ``bci-affect run --lsl``, sped up.

A simulated session (``bci-affect simulate``, one subject) is published on LSL by
``bci-affect replay --realtime --loop --speed X`` (EEG and FaceFeatures, looped until the
stream time reaches ``--hours``), recorded by ``bci-affect record`` and scored by
``bci-affect run --lsl``, three real processes on localhost. Every ``--sample-s`` seconds the
benchmark reads the resident memory (VmRSS) of the ``run`` and ``record`` processes from
``/proc``. At the end it reports, from the predictions (``run --out``) and the XDF:

- memory: RSS after the first minute of wall time and at the end, growth in %
  (target <= 5 %);
- latency: p99 of ``latency_total_ms`` over the first and the last 10 % of the predictions,
  drift in % (target <= 10 %); p50 and p99 over the run;
- skipped windows (the sum of ``n_skipped``) and windows missing from the hop grid;
- dropped samples: EEG sample gaps in the recorded XDF (steps over 1.5 sample periods) and
  samples recorded against those expected from the stream time (target: none);
- file sizes: the predictions file and the XDF, bytes per minute of stream time, and how long
  ``record`` takes to finalise the file after Ctrl-C.

The load average is printed at the start and the end (the machine may be shared).

Run::

    .venv/bin/python benchmarks/soak.py                     # 2 h of stream time at 8x: 15 min
    .venv/bin/python benchmarks/soak.py --hours 0.1 --out /tmp/soak.json   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BCI = [sys.executable, "-m", "bci_affect"]
TARGET_RSS_GROWTH = 5.0  # % after the first minute
TARGET_P99_DRIFT = 10.0  # % last tenth vs first tenth


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (NaN once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except (FileNotFoundError, ProcessLookupError):
        pass
    return float("nan")


def wait_for_line(proc: subprocess.Popen, needle: str, deadline_s: float) -> list[str]:
    """Read ``proc``'s stdout until a line contains ``needle``; the lines read."""
    lines: list[str] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip())
        if needle in line:
            return lines
    raise RuntimeError(f"no line with {needle!r} from {proc.args[:4]}: {lines[-5:]}")


def drain(proc: subprocess.Popen) -> list[str]:
    """Keep reading ``proc``'s stdout and stderr in threads (a full pipe would block it);
    the lines, as they come."""
    lines: list[str] = []

    def read(pipe) -> None:
        for line in pipe:
            lines.append(line.rstrip())

    for pipe in (proc.stdout, proc.stderr):
        threading.Thread(target=read, args=(pipe,), daemon=True).start()
    return lines


def stop(proc: subprocess.Popen, timeout_s: float = 60.0) -> int:
    """SIGINT (Ctrl-C) and wait; its exit status (killed after ``timeout_s``)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def eeg_gaps(xdf: Path) -> dict:
    """Samples and gaps of the recorded EEG stream."""
    from acquisition.xdf import load_xdf  # noqa: PLC0415

    streams = load_xdf(xdf)
    (eeg,) = [c for c in streams if c.info.type == "EEG"]
    t = np.asarray(eeg.times)
    dt = np.diff(t)
    period = 1.0 / eeg.info.sfreq
    gaps = dt > 1.5 * period
    missing = int(np.round(dt[gaps] / period).sum() - gaps.sum()) if gaps.any() else 0
    span = float(t[-1] - t[0]) if t.size > 1 else 0.0
    return {
        "samples": int(t.size),
        "span_s": span,
        "expected_samples": int(round(span * eeg.info.sfreq)) + 1,
        "gaps": int(gaps.sum()),
        "samples_missing_in_gaps": missing,
        "largest_gap_s": float(dt.max()) if dt.size else 0.0,
    }


def summarise(preds_path: Path) -> dict:
    """Latency, skips and hop-grid completeness from the predictions file."""
    rows = [json.loads(line) for line in preds_path.read_text().splitlines() if line.strip()]
    if not rows:
        raise RuntimeError(f"{preds_path} holds no predictions")
    lat = np.array([r["latency_ms"]["total"] for r in rows], float)
    lat = lat[np.isfinite(lat)]
    tenth = max(1, lat.size // 10)
    p99_first = float(np.percentile(lat[:tenth], 99))
    p99_last = float(np.percentile(lat[-tenth:], 99))
    idx = np.array([r["index"] for r in rows])
    t_end = np.array([r["t_window_end"] for r in rows], float)
    hop_s = float(np.median(np.diff(t_end) / np.diff(idx).clip(1)))
    grid_missing = int((np.diff(idx) - 1).clip(0).sum())
    return {
        "predictions": len(rows),
        "stream_time_s": float(t_end[-1] - t_end[0]),
        "latency_total_ms_p50": float(np.percentile(lat, 50)),
        "latency_total_ms_p99": float(np.percentile(lat, 99)),
        "latency_p99_first_tenth_ms": p99_first,
        "latency_p99_last_tenth_ms": p99_last,
        "latency_p99_drift_pct": 100.0 * (p99_last - p99_first) / p99_first,
        "n_skipped": int(sum(r.get("n_skipped", 0) for r in rows)),
        "windows_missing_from_grid": grid_missing,
        "expected_windows": int(round((t_end[-1] - t_end[0]) / hop_s)) + 1,
        "face_available_pct": 100.0
        * float(np.mean([bool(r["modalities"]["face_available"]) for r in rows])),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hours", type=float, default=2.0, help="stream time to run (2)")
    ap.add_argument("--speed", type=float, default=8.0, help="replay speed (8)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="RSS sampling period (5 s)")
    ap.add_argument("--seed", type=int, default=0, help="simulator seed (0)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--keep", type=Path, help="keep the work folder here (default: deleted)")
    args = ap.parse_args(argv)
    wall_s = args.hours * 3600.0 / args.speed
    uid = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("BCI_AFFECT_RAISE_STREAM_ERRORS", None)
    load_start = os.getloadavg()
    print(f"soak: {args.hours:g} h of stream time at {args.speed:g}x = {wall_s / 60:.1f} min; "
          f"load average {load_start[0]:.2f}", file=sys.stderr)  # fmt: skip
    procs: list[subprocess.Popen] = []
    ok = False
    try:
        subprocess.run(
            [*BCI, "simulate", "--subjects", "1", "--seed", str(args.seed), "--out",
             str(work / "sim")],
            check=True, cwd=ROOT, env=env, capture_output=True,
        )  # fmt: skip
        (xdf,) = sorted((work / "sim").rglob("*.xdf"))
        prefix = f"soak-{uid}"
        player = subprocess.Popen(
            [*BCI, "replay", str(xdf), "--realtime", "--loop", "--speed", str(args.speed),
             "--streams", "EEG", "FaceFeatures", "--source-id-prefix", prefix],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(player)
        wait_for_line(player, "publishing", 60)
        drain(player)
        sel = [f"source_id={prefix}:{s}" for s in _source_ids(xdf)]
        recorder = subprocess.Popen(
            [*BCI, "record", "--out", str(work / "soak.xdf"), "--streams", *sel,
             "--timeout", "30"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(recorder)
        wait_for_line(recorder, "recording", 60)
        rec_lines = drain(recorder)
        run_log = open(work / "run.log", "w")  # noqa: SIM115  (closed below)
        runner = subprocess.Popen(
            [*BCI, "run", "--lsl", *sel, "--duration", f"{wall_s:.0f}", "--status-every", "0",
             "--out", str(work / "preds.jsonl"), "--line-freq", "60"],
            cwd=ROOT, env=env, stdout=run_log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(runner)
        t0 = time.monotonic()
        samples: list[tuple[float, float, float]] = []  # (wall s, run MiB, record MiB)
        while runner.poll() is None:
            samples.append((time.monotonic() - t0, rss_mb(runner.pid), rss_mb(recorder.pid)))
            with contextlib.suppress(subprocess.TimeoutExpired):
                runner.wait(timeout=args.sample_s)
        run_log.close()
        run_text = (work / "run.log").read_text()
        t_stop = time.monotonic()
        rec_rc = stop(recorder, timeout_s=1800.0)  # finalising hours of data takes a while
        record_stop_s = time.monotonic() - t_stop
        stop(player)
        if runner.returncode != 0:
            raise RuntimeError(f"run exited {runner.returncode}: {run_text.strip()[-500:]}")
        if rec_rc != 0:
            raise RuntimeError(f"record exited {rec_rc}: {rec_lines[-5:]}")
        s = np.array(samples, float)
        after = s[s[:, 0] >= min(60.0, s[-1, 0] / 2)]
        result = {
            "command": ["benchmarks/soak.py", *(argv if argv is not None else sys.argv[1:])],
            "hours": args.hours,
            "speed": args.speed,
            "wall_s": float(s[-1, 0]) if len(s) else 0.0,
            "load_avg_start": load_start,
            "load_avg_end": os.getloadavg(),
            "rss_run_mb_after_first_minute": float(after[0, 1]),
            "rss_run_mb_end": float(np.nanmax(after[-3:, 1])),
            "rss_record_mb_after_first_minute": float(after[0, 2]),
            "rss_record_mb_end": float(np.nanmax(after[-3:, 2])),
            "predictions": summarise(work / "preds.jsonl"),
            "eeg_recorded": eeg_gaps(work / "soak.xdf"),
            "bytes": {
                "predictions_jsonl": (work / "preds.jsonl").stat().st_size,
                "xdf": (work / "soak.xdf").stat().st_size,
            },
            "record_stop_s": record_stop_s,
            "run_summary": run_text.strip().splitlines()[-8:],
        }
        for who in ("run", "record"):
            a = result[f"rss_{who}_mb_after_first_minute"]
            result[f"rss_{who}_growth_pct"] = 100.0 * (result[f"rss_{who}_mb_end"] - a) / a
        minutes = result["predictions"]["stream_time_s"] / 60.0
        result["bytes_per_stream_minute"] = {k: v / minutes for k, v in result["bytes"].items()}
        result["rss_trace"] = [[round(a, 1), round(b, 1), round(c, 1)] for a, b, c in samples]
        result["targets"] = {
            "rss_growth_le_5pct": result["rss_run_growth_pct"] <= TARGET_RSS_GROWTH,
            "p99_drift_le_10pct": result["predictions"]["latency_p99_drift_pct"]
            <= TARGET_P99_DRIFT,
            "nothing_skipped": result["predictions"]["n_skipped"] == 0
            and result["predictions"]["windows_missing_from_grid"] == 0,
            "nothing_dropped": result["eeg_recorded"]["samples_missing_in_gaps"] == 0,
        }
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        ok = True
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                stop(p, 30)
        if args.keep:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"soak: failed; its files are kept in {work}", file=sys.stderr)


def _source_ids(xdf: Path) -> list[str]:
    """Recorded source_ids of the EEG and FaceFeatures streams of ``xdf``."""
    from acquisition.xdf import load_xdf  # noqa: PLC0415

    out = []
    for c in load_xdf(xdf):
        if c.info.name in ("EEG", "FaceFeatures"):
            out.append(c.info.source_id)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
