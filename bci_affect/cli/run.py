"""``bci-affect run``: live inference on a board (or LSL streams) and a camera.

Sources (a BrainFlow board, a webcam or a video file through the face pipeline, or streams
already on LSL) feed one :class:`~bci_affect.engine.Engine`; every window's prediction is
published on an ``AffectPredictions`` LSL outlet, written as JSON lines (``--out``),
summarised at the end and drawn into a report (``--report``). The board's and the camera's
streams are published on LSL as well (as ``bci-affect stream`` and ``bci-affect camera`` do),
so ``bci-affect record`` can store them beside the predictions; acquisition and publishing run
in their own threads and never wait for the model.

This module also holds the pieces ``replay`` and ``demo`` share: the model and output options
and :class:`PredictionOutputs`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from bci_affect.cli._subjects import add_subject_arguments, apply_subject_model
from bci_affect.core.errors import BciAffectError, ConfigError

_EPILOG = """\
examples:
  bci-affect run --board synthetic --camera-file face.mp4 --out S01.jsonl --report S01.html
  bci-affect run --board cyton --serial-port /dev/ttyUSB0 --camera 0 --model models/S01
  bci-affect run --lsl EEG FaceFeatures --duration 600          streams already on LSL
  bci-affect record --out rec/S01/ses1.xdf      (another terminal: records the inputs and
                                                  the AffectPredictions stream together)

streams published:
  EEG, EEG-accel, EEG-events       the board (--board; not with --lsl or --no-publish-inputs)
  FaceFeatures, FaceFeatures-events   the camera pipeline (--camera / --camera-file)
  AffectPredictions                one sample per window, stamped with the window's end
                                   (LSL clock): t_window_end, window_index, predicted,
                                   p_<class> (fused), p_teacher_<class>, p_student_<class>,
                                   uncertainty, uncertainty_teacher, uncertainty_student,
                                   disagreement, set_<class>, quality, eeg_coverage,
                                   face_coverage, face_available, eeg_available, face_used,
                                   eeg_used, face_reliability, eeg_reliability, blink, muscle,
                                   n_bad_channels, n_skipped, latency_{signals,queue,model,
                                   total}_ms, lag_ms
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="live inference: board (or LSL) + camera -> AffectPredictions",
        description="Score live EEG (+ face) windows with the model and publish one prediction "
        "per window on an AffectPredictions LSL stream, until Ctrl-C or --duration.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("EEG input (one of)")
    eeg = src.add_mutually_exclusive_group(required=True)
    eeg.add_argument(
        "--board", metavar="BOARD", help="BrainFlow board: synthetic, cyton, cyton-daisy, ..."
    )
    eeg.add_argument(
        "--lsl",
        nargs="+",
        metavar="SEL",
        help="read these LSL streams instead (EEG and optionally FaceFeatures): a name or type, "
        "or name=, type=, source_id=",
    )
    src.add_argument("--serial-port", metavar="PORT", help="serial port of the board's dongle")
    src.add_argument("--file", metavar="F", help="BrainFlow CSV to play back (--board playback)")
    src.add_argument(
        "--master-board", default="synthetic", metavar="B", help="for playback: recording board"
    )
    src.add_argument("--montage", metavar="LABELS", help="comma-separated EEG channel labels")
    src.add_argument(
        "--lost-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="with --lsl: end the run when an input stream has been gone for S seconds "
        "(default 30; a stream back within S, same source_id, is read again)",
    )
    cam = p.add_argument_group("face input (optional)")
    c = cam.add_mutually_exclusive_group()
    c.add_argument("--camera", type=int, metavar="N", help="webcam index (0 = first)")
    c.add_argument("--camera-file", metavar="F", help="video file as a stand-in webcam (real time)")
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    p.add_argument(
        "--no-publish-inputs",
        action="store_true",
        help="do not publish the board's and camera's streams on LSL (only the predictions)",
    )
    p.add_argument(
        "--status-every",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between status lines (default 5; 0: none)",
    )
    add_model_arguments(p, live=True)
    add_subject_arguments(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------
# shared by run, replay and demo


def add_model_arguments(
    p: argparse.ArgumentParser, *, live: bool, out_default=None, outputs: bool = True
) -> None:
    """The model, signals and output options of ``run``, ``replay``, ``demo`` and
    ``calibrate`` (``outputs=False``: without ``--out`` and ``--report``)."""
    g = p.add_argument_group("model and outputs")
    g.add_argument(
        "--model",
        metavar="M",
        help="model folder (`bci-affect train --out`), 'default' (the bundled model; the "
        "default) or 'untrained' (the face expression prior alone)",
    )
    g.add_argument(
        "--device",
        default="auto",
        metavar="D",
        help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="CPU threads of the model (default 1: windows are small, threads only add latency)",
    )
    if outputs:
        g.add_argument(
            "--out",
            type=Path,
            default=out_default,
            metavar="FILE.jsonl",
            help="write every prediction as one JSON line"
            + (f" (default: {out_default})" if out_default else ""),
        )
        g.add_argument(
            "--report",
            type=Path,
            metavar="FILE",
            help="draw the report: .html (self-contained page) or .png",
        )
    g.add_argument(
        "--line-freq",
        type=float,
        choices=[50.0, 60.0],
        default=None,
        help="mains frequency for the notch and the line-noise score (default: the model's, "
        "else 50)",
    )
    g.add_argument(
        "--window-s",
        type=float,
        default=None,
        metavar="S",
        help="window length (default: the model's, else 4)",
    )
    g.add_argument(
        "--hop-s",
        type=float,
        default=None,
        metavar="S",
        help="window hop: one prediction every S seconds (default: the model's, else 0.5)",
    )
    g.add_argument("--session", default=None, metavar="NAME", help="session name in the records")
    g.add_argument(
        "--max-batch", type=int, default=64, metavar="N", help="windows per forward pass (64)"
    )
    if live:
        g.add_argument(
            "--max-pending",
            type=int,
            default=4,
            metavar="N",
            help="windows of a session waiting for the model before the oldest is skipped "
            "(default: 4 live; 64 for replay --realtime, whose inlets start with a burst)",
        )
        g.add_argument(
            "--predictions-name",
            default="AffectPredictions",
            metavar="NAME",
            help="name of the predictions LSL stream (default: AffectPredictions)",
        )


def signals_from_args(args: argparse.Namespace):
    """The signals chain: the one the model was trained with (else the defaults), with the
    options' overrides (a window length other than the model's is refused)."""
    from dataclasses import replace  # noqa: PLC0415

    from bci_affect.engine.models import bundled_model_path, checkpoint_signals  # noqa: PLC0415
    from bci_affect.processors import SignalsConfig  # noqa: PLC0415

    if args.model == "untrained":
        path = None
    elif args.model in (None, "default"):
        path = bundled_model_path()
    else:
        path = args.model
    trained = checkpoint_signals(path) if path is not None else None
    if trained is None:
        return SignalsConfig.make(
            line_hz=50.0 if args.line_freq is None else args.line_freq,
            window_s=4.0 if args.window_s is None else args.window_s,
            hop_s=0.5 if args.hop_s is None else args.hop_s,
        )
    cfg = trained
    if args.window_s is not None and args.window_s != cfg.window.window_s:
        raise ConfigError(
            f"--window-s {args.window_s:g}: the model was trained on {cfg.window.window_s:g} s "
            "windows; leave --window-s out, or train a model for that length"
        )
    if args.hop_s is not None:
        cfg = replace(cfg, window=replace(cfg.window, hop_s=args.hop_s))
    if args.line_freq is not None:
        cfg = replace(
            cfg,
            preprocess=replace(cfg.preprocess, notch_hz=args.line_freq),
            quality=replace(cfg.quality, line_hz=args.line_freq),
        )
    return cfg


def build_engine(args: argparse.Namespace, *, realtime: bool, sinks=(), on_error=None):
    """An :class:`~bci_affect.engine.Engine` from the shared options."""
    import torch  # noqa: PLC0415

    from bci_affect.engine import Engine, EngineConfig  # noqa: PLC0415

    if args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.model not in (None, "default", "untrained") and not Path(args.model).exists():
        raise ConfigError(
            f"--model {args.model}: no such model folder (or use 'default' or 'untrained')"
        )
    config = EngineConfig(
        realtime=realtime,
        device=args.device,
        max_batch=args.max_batch,
        max_pending=getattr(args, "max_pending", 4),
    )
    return Engine(
        args.model,
        config=config,
        signals=signals_from_args(args),
        sinks=sinks,
        on_error=on_error,
    )


class PredictionOutputs:
    """Where predictions go: JSON lines, an LSL outlet, memory (for the summary and report).

    Parameters
    ----------
    out : Path, optional
        JSON-lines file.
    report : Path, optional
        ``.html`` or ``.png`` report, drawn by :meth:`finish`.
    publish : str, optional
        Name of the ``AffectPredictions`` outlet to publish (``None``: no outlet).
    stream : text stream
        Where progress and the summary are printed.
    """

    def __init__(
        self,
        *,
        out: Path | None = None,
        report: Path | None = None,
        publish: str | None = None,
        stream: TextIO | None = None,
    ) -> None:
        from bci_affect.engine import JsonlWriter, PredictionLog  # noqa: PLC0415
        from bci_affect.engine.report import REPORT_FORMATS  # noqa: PLC0415

        if report is not None and report.suffix.lower() not in REPORT_FORMATS:
            raise ConfigError(
                f"--report {report}: use a file name ending in {' or '.join(REPORT_FORMATS)}"
            )
        self.stream = stream or sys.stdout
        self.report = report
        self.publish = publish
        self.writer = JsonlWriter(out) if out is not None else None
        self.log = PredictionLog()
        self.outlet = None
        self.outlet_info = None
        self.last = None
        self.n = 0
        self.trials: list[tuple[float, float, str]] = []  # marked on the report
        self._bad_said: tuple[str, ...] = ()  # bad EEG channels last announced
        self._lock = threading.Lock()

    def open_outlet(self, classes, *, session: str, model: str, source_id: str) -> None:
        """Create the ``AffectPredictions`` outlet (once the model, hence the classes, is known)."""
        if self.publish is None:
            return
        from acquisition.lsl import Outlet  # noqa: PLC0415
        from bci_affect.engine import predictions_stream_info  # noqa: PLC0415

        self.outlet_info = predictions_stream_info(
            classes, name=self.publish, source_id=source_id, session=session, model=model
        )
        self.outlet = Outlet(self.outlet_info)

    def __call__(self, prediction) -> None:
        from bci_affect.engine import predictions_chunk  # noqa: PLC0415

        if self.outlet is not None:
            self.outlet.push(predictions_chunk([prediction], self.outlet_info))
        record = prediction.to_dict()
        if self.writer is not None:
            self.writer.write_record(record)
        self.log.add_record(record)
        with self._lock:
            self.last = prediction
            self.n += 1

    def status(self) -> str:
        """One line about the latest prediction."""
        with self._lock:
            p, n = self.last, self.n
        if p is None:
            return "no prediction yet"
        mods = "+".join(m for m, on in (("face", p.face_used), ("EEG", p.eeg_used)) if on)
        return (
            f"{n} predictions; last: {p.predicted_class} p={p.probs.max():.2f} "
            f"u={p.uncertainty:.2f} disagreement={p.disagreement:.3f} "
            f"(evidence from {mods or 'none'}), {p.latency_ms['total']:.1f} ms"
        )

    def bad_channels_change(self) -> str | None:
        """One line when the EEG channels flagged bad (flat, railed, noisy) in the latest
        prediction differ from those last announced; ``None`` when nothing changed."""
        with self._lock:
            p = self.last
        if p is None:
            return None
        bad = tuple(p.quality["bad_channels"])
        if bad == self._bad_said:
            return None
        self._bad_said = bad
        at = f"window ending t={p.t_window_end:.3f} s"
        if not bad:
            return f"every EEG channel good again ({at})"
        return (
            f"EEG channels flagged bad (flat, railed or noisy) and left out: {', '.join(bad)} "
            f"({at})"
        )

    def close(self) -> None:
        if self.outlet is not None:
            self.outlet.close()
            self.outlet = None
        if self.writer is not None:
            self.writer.close()

    def finish(self, *, title: str, notes=(), why_empty: str | None = None) -> dict | None:
        """Print the summary and draw the report; returns the summary (``None`` if empty).

        ``why_empty`` replaces the hint printed when no window was scored."""
        from bci_affect.engine.report import format_summary, summarize, write_report  # noqa: PLC0415

        self.close()
        records = list(self.log.records)
        if not records:
            why = why_empty or "is there an EEG stream, and is it longer than one window?"
            print(f"no window was scored ({why})", file=self.stream, flush=True)
            return None
        summary = summarize(records)
        print(format_summary(summary), file=self.stream, flush=True)
        if self.writer is not None:
            print(
                f"predictions: {self.writer.path} ({self.writer.n_written} lines)",
                file=self.stream,
                flush=True,
            )
        if self.report is not None:
            write_report(
                records, self.report, title=title, summary=summary, notes=notes, trials=self.trials
            )
            print(f"report: {self.report}", file=self.stream, flush=True)
        return summary


def report_errors(engine, *, command: str) -> int:
    """Print the errors the engine caught, one line each; the exit status they call for.

    2 when a source failed with a known error (device lost, stream gone), 1 for other errors
    (a model or sink crash: acquisition went on, predictions are missing), else 0.
    """
    status = 0
    for err in engine.errors:
        print(f"bci-affect {command}: error: {err}", file=sys.stderr)
        known = err.stage == "source" and isinstance(err.error, BciAffectError)
        status = max(status, 2 if known else 1)
    return status


# --------------------------------------------------------------------------------------------
# live


def _camera_source(args: argparse.Namespace):
    from acquisition.camera import CameraConfig, CameraSource  # noqa: PLC0415
    from acquisition.face_features import (  # noqa: PLC0415
        FaceFeatureExtractor,
        FaceFeaturesConfig,
        FaceFeatureSource,
    )

    origin = str(args.camera) if args.camera is not None else str(Path(args.camera_file).resolve())
    source_id = f"bci-affect:face:{origin}"
    camera = CameraSource(
        CameraConfig(
            device=args.camera,
            file=args.camera_file,
            realtime=True,
            source_id=f"{source_id}:camera",
        )
    )
    extractor = FaceFeatureExtractor(FaceFeaturesConfig(source_id=source_id))
    return FaceFeatureSource(camera, extractor)


def _sources(args: argparse.Namespace) -> list[tuple[object, bool]]:
    """``(source, publish)`` pairs: the EEG source first; LSL inputs are not re-published."""
    from bci_affect.cli.stream import parse_montage  # noqa: PLC0415

    publish = not args.no_publish_inputs
    sources: list[tuple[object, bool]] = []
    if args.board is not None:
        from acquisition.brainflow_source import BrainFlowSource  # noqa: PLC0415

        board = BrainFlowSource(
            args.board,
            serial_port=args.serial_port,
            file=args.file,
            master_board=args.master_board,
            montage=parse_montage(args.montage),
        )
        sources.append((board, publish))
    else:
        for flag in ("serial_port", "file", "montage"):
            if getattr(args, flag):
                raise ConfigError(f"--{flag.replace('_', '-')} applies to --board only")
        from acquisition.lsl_inlet import LslSource  # noqa: PLC0415

        if not args.lost_timeout > 0:
            raise ConfigError(f"--lost-timeout must be > 0 seconds, got {args.lost_timeout:g}")
        sources.append((LslSource(args.lsl, lost_timeout_s=args.lost_timeout), False))
    if args.camera is not None or args.camera_file is not None:
        sources.append((_camera_source(args), publish))
    return sources


def _publisher(source):
    """A tee that re-publishes every stream of an open source on its own LSL outlet."""
    from acquisition.lsl import Outlet  # noqa: PLC0415

    outlets = {info.name: Outlet(info) for info in source.streams}

    def tee(chunk) -> None:
        outlet = outlets.get(chunk.name)
        if outlet is not None:
            outlet.push(chunk)

    return tee, list(outlets.values())


def _event_line(text: str, eeg: set[str]) -> str | None:
    """What a user needs to read about one acquisition event (JSON, see README), or ``None``;
    ``eeg``: the names of the EEG streams (their loss stops the predictions)."""
    import json  # noqa: PLC0415

    try:
        ev = json.loads(text)
    except ValueError:
        return None
    if not isinstance(ev, dict):
        return None
    kind, name = ev.get("event"), ev.get("stream")
    if kind == "stream_lost":
        until = (
            "; no predictions until it does"
            if name in eeg
            else "; predictions go on with the EEG alone"
        )
        return f"stream {name!r} lost; waiting for it to come back{until}"
    if kind == "stream_ended":
        why = f" ({ev['reason']})" if isinstance(ev.get("reason"), str) else ""
        rest = "" if name in eeg else "; predictions go on with the EEG alone"
        return f"stream {name!r} ended{why}{rest}"
    if kind == "stream_recovered":
        return f"stream {name!r} is back"
    start, end = ev.get("start"), ev.get("end")
    if kind == "gap" and isinstance(start, int | float) and isinstance(end, int | float):
        scored = "; windows over it are not scored as EEG" if name in eeg else ""
        return f"stream {name!r}: {end - start:.2f} s gap (t={start:.3f} to {end:.3f} s){scored}"
    return None


def _announcer(tee, t_start: float, eeg: set[str]):
    """A tee that prints stream loss, recovery and gaps (acquisition events), then calls
    ``tee`` (e.g. the publisher), if any."""

    def announce(chunk) -> None:
        if chunk.info.type == "Markers" and chunk.name.endswith("-events"):
            for text in chunk.data[0]:
                line = _event_line(str(text), eeg)
                if line is not None:
                    print(f"[{time.monotonic() - t_start:6.1f} s] {line}", flush=True)
        if tee is not None:
            tee(chunk)

    return announce


def _unscored(stats) -> str:
    """The end of the summary line: windows and samples lost to faults, if any."""
    parts = []
    if stats.n_incomplete:
        parts.append(f"{stats.n_incomplete} not scored (EEG gap or NaN, no face)")
    if stats.n_failed:
        parts.append(f"{stats.n_failed} failed (model error)")
    if stats.n_nonfinite:
        parts.append(f"{stats.n_nonfinite} EEG samples with NaN or inf left out")
    return "".join(f", {p}" for p in parts)


def run(args: argparse.Namespace) -> int:
    from acquisition.lsl_inlet import quiet_liblsl  # noqa: PLC0415

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration:g}")
    if args.status_every < 0:
        raise ConfigError(f"--status-every must be >= 0 seconds, got {args.status_every:g}")
    quiet_liblsl()
    apply_subject_model(args)
    sources = _sources(args)
    outputs = PredictionOutputs(out=args.out, report=args.report, publish=args.predictions_name)
    engine = build_engine(args, realtime=True, sinks=[outputs])
    name = args.session or "live"
    stop = threading.Event()
    outlets: list = []
    feeders: list = []
    opened: list = []
    session = None
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t_start = time.monotonic()
    try:
        for s, _ in sources:
            s.__enter__()
            opened.append(s)
        streams = [info for s, _ in sources for info in s.streams]
        session = engine.add_session(name, streams=streams)
        if session.model is None:
            raise ConfigError(
                "no EEG stream among the inputs: "
                + ", ".join(f"{i.name!r} (type {i.type})" for i in streams)
                + "; name the EEG stream with --lsl, or check the board"
            )
        outputs.open_outlet(
            session.classes,
            session=name,
            model=session.model.name,
            source_id=f"bci-affect:predictions:{name}",
        )
        print(
            f"scoring {', '.join(repr(i.name) for i in streams if i.type != 'Markers')} with "
            f"{session.model.name} on {engine.device}; predictions on LSL stream "
            f"{args.predictions_name!r}"
            + (f" and in {args.out}" if args.out else "")
            + "; Ctrl-C to stop",
            flush=True,
        )
        if session.montage_line():
            print(session.montage_line(), flush=True)
        eeg = {i.name for i in streams if i.type.upper() == "EEG"}
        for s, publish in sources:
            tee = None
            if publish:
                tee, outs = _publisher(s)
                outlets.extend(outs)
            feeders.append(engine.feed(s, session, tee=_announcer(tee, t_start, eeg)))
        next_status = time.monotonic() + args.status_every
        while not stop.is_set() and feeders[0].running:
            now = time.monotonic()
            if args.duration is not None and now - t_start >= args.duration:
                break
            change = outputs.bad_channels_change()
            if change is not None:
                print(f"[{now - t_start:6.1f} s] {change}", flush=True)
            wait = 0.2
            if args.status_every > 0:
                if now >= next_status:
                    print(f"[{now - t_start:6.1f} s] {outputs.status()}", flush=True)
                    next_status = now + args.status_every
                wait = min(wait, max(0.01, next_status - now))
            stop.wait(wait)
    except KeyboardInterrupt:
        pass
    finally:
        for s in opened:
            s.stop()
        for f in feeders:
            f.join(5.0)
        for s in opened:
            try:
                s.__exit__(None, None, None)
            except Exception as exc:  # noqa: BLE001
                print(f"bci-affect run: warning: closing a source: {exc}", file=sys.stderr)
        engine.close()
        for o in outlets:
            o.close()
        outputs.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if session is None:  # interrupted while the sources were opening
        print("bci-affect run: interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - t_start
    stats = session.stats
    print(
        f"ran {elapsed:.1f} s: "
        + ", ".join(f"{k} {v} samples" for k, v in stats.n_samples.items())
        + f"; {stats.n_windows} windows, {stats.n_scored} scored, {stats.n_skipped} skipped"
        + _unscored(stats),
        flush=True,
    )
    why = "the model failed on every window: see the error below" if stats.n_failed else None
    outputs.finish(title=f"bci-affect run: session {name}", why_empty=why)
    return report_errors(engine, command="run")
