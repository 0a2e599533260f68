"""``bci-affect calibrate``: a calibration session with active labelling.

The participant's EEG (a BrainFlow board, LSL streams, or a recording replayed in real time
with ``--replay``) and face (``--camera`` / ``--camera-file``) are scored live. When face and
EEG disagree most, the session asks how the participant felt during the last few seconds
(SAM valence and arousal, 1-9) on a local web page or in the terminal. Every answer is
committed to SQLite as it arrives and published as a marker in the session's XDF recording;
every few answers the model is personalised in the background and the live engine switches to
the new version. ``--resume`` continues an interrupted session with nothing lost.

Where things go (``--data-dir``, default ``$BCI_AFFECT_DATA`` or ``~/.local/share/bci-affect``)::

    calibration.sqlite                         subjects, sessions, queries, answers, models
    calibration.sqlite.locks/session-<N>.lock  held by the process running session N
    subjects/<S>/models/v<N>/                  the subject's model versions (v0: the start)
    subjects/<S>/sessions/<session>/           calibration-<part>.xdf, predictions.jsonl,
                                               report.html
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

from bci_affect.cli._subjects import (
    default_data_dir,
    store_path,
)
from bci_affect.core.errors import ConfigError

logger = logging.getLogger(__name__)

_EPILOG = """\
examples:
  bci-affect calibrate --subject S01 --board cyton --serial-port /dev/ttyUSB0 --camera 0
  bci-affect calibrate --subject S01 --replay rec/S01/ses1.xdf --budget 10
  bci-affect calibrate --subject S01 --board synthetic --ui terminal --duration 600
  bci-affect calibrate --resume                  continue the last interrupted session
  bci-affect run --subject S01 --board cyton ... live inference with S01's latest model

the web page (default) is served on 127.0.0.1; its address is printed at the start. Bound to
another address (--host), the address carries a random token.
"""

#: A resumed replay starts this long before the last scored window (the first windows need
#: a full window of signal; windows scored twice are never asked about twice).
RESUME_OVERLAP_S = 10.0
#: ``OSError.errno`` values that mean the session's files cannot be written (disk full, quota,
#: file size limit, read-only or failing disk): the session stops, what was stored stays.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}


def register(subparsers: argparse._SubParsersAction) -> None:
    from bci_affect.cli.run import add_model_arguments  # noqa: PLC0415

    p = subparsers.add_parser(
        "calibrate",
        help="calibration session: ask for labels where face and EEG disagree, personalise",
        description="Run a calibration session: live scoring, label queries at the moments "
        "of highest face/EEG disagreement, answers stored in SQLite and the session's XDF, "
        "and the model personalised every few answers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--subject", metavar="S", help="participant id (letters, digits, - and _)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="SESSION",
        help="continue an interrupted session (default: the latest one; or its number)",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="default: $BCI_AFFECT_DATA or ~/.local/share/bci-affect",
    )
    src = p.add_argument_group("EEG input (one of)")
    eeg = src.add_mutually_exclusive_group()
    eeg.add_argument("--board", metavar="B", help="BrainFlow board: synthetic, cyton, ...")
    eeg.add_argument("--lsl", nargs="+", metavar="SEL", help="LSL streams (EEG, FaceFeatures)")
    eeg.add_argument(
        "--replay", metavar="F.xdf", help="drive the session from a recording, in real time"
    )
    src.add_argument("--serial-port", metavar="PORT", help="serial port of the board's dongle")
    src.add_argument("--montage", metavar="LABELS", help="comma-separated EEG channel labels")
    src.add_argument(
        "--speed", type=float, default=1.0, metavar="X", help="--replay speed (default 1)"
    )
    cam = p.add_argument_group("face input (optional)")
    c = cam.add_mutually_exclusive_group()
    c.add_argument("--camera", type=int, metavar="N", help="webcam index")
    c.add_argument("--camera-file", metavar="F", help="video file as a stand-in webcam")
    s = p.add_argument_group("session")
    s.add_argument("--stimuli", type=Path, metavar="DIR", help="images/videos shown in blocks")
    s.add_argument("--stimulus-s", type=float, default=20.0, metavar="S", help="per stimulus (20)")
    s.add_argument("--rest-s", type=float, default=30.0, metavar="S", help="opening rest (30)")
    s.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    q = p.add_argument_group("queries")
    q.add_argument("--budget", type=int, default=20, metavar="N", help="queries (default 20)")
    q.add_argument("--span-s", type=float, default=8.0, metavar="S", help="span asked about (8)")
    q.add_argument(
        "--min-interval-s", type=float, default=20.0, metavar="S", help="between queries (20)"
    )
    q.add_argument(
        "--query-by",
        default="disagreement",
        choices=["disagreement", "uncertainty", "entropy", "random"],
        help="window score that ranks moments to ask about (default: disagreement)",
    )
    q.add_argument(
        "--top-fraction", type=float, default=0.3, metavar="F", help="ask in the top F (0.3)"
    )
    q.add_argument(
        "--explore",
        type=float,
        default=0.25,
        metavar="F",
        help="fraction of queries asked at a random moment, not by score: the unbiased sample "
        "personalised versions are judged on, 3 such answers at least (0.25; 0 asks by score "
        "only, and then no personalised version is adopted)",
    )
    q.add_argument("--warmup", type=int, default=8, metavar="N", help="windows before asking (8)")
    q.add_argument(
        "--answer-timeout-s", type=float, default=60.0, metavar="S", help="query expiry (60)"
    )
    q.add_argument(
        "--personalise-every",
        type=int,
        default=5,
        metavar="K",
        help="answers per personalisation round (default 5; 0: never)",
    )
    u = p.add_argument_group("interface")
    u.add_argument("--ui", choices=["web", "terminal"], default="web", help="default: web")
    u.add_argument("--host", default="127.0.0.1", help="web page address (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=8765, metavar="N", help="default 8765; 0: any")
    u.add_argument("--no-record", action="store_true", help="do not write the session XDF")
    add_model_arguments(p, live=True, outputs=False)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------------------------


class _StartAt:
    """A source that starts ``t0`` seconds into another (a resumed replay)."""

    def __init__(self, source, t0: float) -> None:
        self.source = source
        self.t0 = float(t0)

    @property
    def streams(self):
        return self.source.streams

    @property
    def path(self):
        return getattr(self.source, "path", None)

    def __enter__(self):
        self.source.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.source.__exit__(*exc)

    def stop(self) -> None:
        self.source.stop()

    def __iter__(self):
        from bci_affect.core.chunk import Chunk  # noqa: PLC0415

        for chunk in self.source:
            keep = chunk.times >= self.t0
            if keep.all():
                yield chunk
            elif keep.any():
                yield Chunk(chunk.data[:, keep], chunk.times[keep], chunk.info)


def _session_args(args: argparse.Namespace) -> dict:
    """The options a resumed session takes over (JSON-able)."""
    keys = (
        "board", "lsl", "replay", "serial_port", "montage", "speed", "camera", "camera_file",
        "stimuli", "stimulus_s", "rest_s", "duration", "budget", "span_s", "min_interval_s",
        "query_by", "top_fraction", "explore", "warmup", "answer_timeout_s", "personalise_every",
        "ui", "host", "port", "no_record", "model", "device", "threads", "line_freq",
        "window_s", "hop_s", "max_batch", "max_pending",
    )  # fmt: skip
    out = {}
    for k in keys:
        v = getattr(args, k, None)
        out[k] = str(v) if isinstance(v, Path) else v
    if out.get("replay"):
        out["replay"] = str(Path(out["replay"]).resolve())
    return out


def _check_args(args: argparse.Namespace) -> None:
    if not args.resume and not args.subject:
        raise ConfigError("name the participant with --subject S (or continue with --resume)")
    if not args.resume and not (args.board or args.lsl or args.replay):
        raise ConfigError("give the EEG input: --board B, --lsl SEL..., or --replay F.xdf")
    if args.replay and not Path(args.replay).is_file():
        raise ConfigError(f"--replay {args.replay}: no such file")
    if not (args.speed > 0):
        raise ConfigError(f"--speed must be > 0, got {args.speed:g}")
    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration:g}")
    if args.stimuli is not None and not Path(args.stimuli).is_dir():
        raise ConfigError(f"--stimuli {args.stimuli}: no such folder")
    if args.personalise_every < 0:
        raise ConfigError(f"--personalise-every must be >= 0, got {args.personalise_every}")


def _resume(args: argparse.Namespace, store) -> tuple[object, dict]:
    """The session row to continue and its stored options (command-line ones win only for
    where and how to show the UI)."""
    if args.resume == "latest":
        row = store.latest_session(args.subject, unfinished_only=True)
        if row is None:
            raise ConfigError(
                "no interrupted session to resume"
                + (f" for subject {args.subject!r}" if args.subject else "")
                + "; start one with --subject S"
            )
    else:
        try:
            row = store.session(int(args.resume))
        except ValueError:
            raise ConfigError(f"--resume {args.resume}: give a session number") from None
    if row.status == "finished":
        raise ConfigError(f"session {row.id} ({row.name}) finished already; start a new one")
    return row, dict(row.config or {})


def _blocks(args: argparse.Namespace):
    from calibration.session import Block  # noqa: PLC0415
    from calibration.web import STIMULUS_TYPES  # noqa: PLC0415

    inf = float("inf")
    blocks = [Block("rest", 0.0, args.rest_s)] if args.rest_s > 0 else []
    t = blocks[-1].end_s if blocks else 0.0
    if args.stimuli is not None:
        files = sorted(
            f for f in Path(args.stimuli).iterdir() if f.suffix.lower() in STIMULUS_TYPES
        )
        if not files:
            raise ConfigError(
                f"--stimuli {args.stimuli}: no images or videos ({', '.join(STIMULUS_TYPES)})"
            )
        for f in files:
            blocks.append(Block(f"stimulus {f.name}", t, args.stimulus_s))
            t += args.stimulus_s
    blocks.append(Block("free", t, inf))
    return blocks


def run(args: argparse.Namespace) -> int:
    from acquisition.lsl_inlet import quiet_liblsl  # noqa: PLC0415
    from calibration.store import LabelStore  # noqa: PLC0415

    quiet_liblsl()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    store = LabelStore(store_path(data_dir))
    try:
        return _run(args, store, data_dir)
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        raise _stopped(exc, None) from None
    finally:
        store.close()


def _stopped(exc: BaseException, session_id: int | None):
    """The one-line error of a session stopped because its data cannot be written."""
    from calibration.store import StorageError  # noqa: PLC0415

    if isinstance(exc, OSError):
        where = exc.filename or "a session file"
        todo = {
            errno.EFBIG: "raise the file size limit (ulimit -f)",
            errno.EROFS: "make its disk writable",
            errno.EIO: "check its disk",
        }.get(exc.errno, "free some space on its disk")
        text = f"cannot write {where}: {exc.strerror or exc}; {todo}"
    else:
        text = str(exc)
    if session_id is not None:
        text += (
            f"; the answers stored before are kept: once fixed, continue with: "
            f"bci-affect calibrate --resume {session_id}"
        )
    return StorageError(text)


def _run(args: argparse.Namespace, store, data_dir: Path) -> int:  # noqa: C901
    from acquisition.lsl import Outlet  # noqa: PLC0415
    from bci_affect.cli.run import PredictionOutputs, build_engine, report_errors  # noqa: PLC0415
    from bci_affect.core.chunk import StreamInfo  # noqa: PLC0415
    from calibration.personalise import Personaliser  # noqa: PLC0415
    from calibration.policy import PolicyConfig, QueryPolicy  # noqa: PLC0415
    from calibration.report import (  # noqa: PLC0415
        format_session_summary,
        session_summary,
        write_session_report,
    )
    from calibration.session import (  # noqa: PLC0415
        CalibrationController,
        ControllerSettings,
        model_name,
    )
    from calibration.store import StorageError  # noqa: PLC0415

    for row in store.close_abandoned():  # their process was killed or crashed
        print(
            f"session {row.id} ({row.name}) of {row.subject} was left running by a process "
            f"that ended without closing it; marked interrupted (--resume {row.id} continues it)",
            flush=True,
        )
    ui_overrides = {"ui": args.ui, "host": args.host, "port": args.port}
    resumed = None
    if args.resume:
        resumed, stored = _resume(args, store)
        store.hold_session(resumed.id)  # refused while another process runs it
        for k, v in stored.items():
            if k not in ui_overrides:
                setattr(args, k, Path(v) if k == "stimuli" and v else v)
        args.subject = resumed.subject
    _check_args(args)
    store.ensure_subject(args.subject)
    subject = args.subject
    sub_dir = data_dir / "subjects" / subject
    models_dir = sub_dir / "models"
    latest = store.latest_model(subject)
    start_model = args.model
    if start_model is None and latest is not None and latest.path:
        args.model = str(latest.path)

    # -- inputs -------------------------------------------------------------------------
    player = None
    sources: list[tuple[object, bool]] = []
    input_offset_s = None
    if args.replay:
        from acquisition.files import open_recording  # noqa: PLC0415
        from acquisition.lsl_inlet import LslSource  # noqa: PLC0415
        from acquisition.player import Player  # noqa: PLC0415
        from bci_affect.cli.inspect import recording_warnings  # noqa: PLC0415

        with recording_warnings("calibrate"):
            rec = open_recording(args.replay)
            names = [i.name for i in rec.streams if i.type in ("EEG", "FaceFeatures")]
            if not any(i.type == "EEG" for i in rec.streams):
                raise ConfigError(f"--replay {args.replay}: the recording has no EEG stream")
            rec = rec if not names else _select(rec, names)
            if resumed is not None and resumed.progress_t is not None:
                rec = _StartAt(rec, resumed.progress_t - RESUME_OVERLAP_S)
            player = Player(
                rec,
                speed=args.speed,
                wait_for_consumers_s=10.0,
                source_id_prefix=f"calib{os.getpid()}",
            )
            player.start()
        input_offset_s = lambda: player.offset_s  # noqa: E731
        sources.append((LslSource([f"source_id={s.source_id}" for s in player.streams]), False))
    else:
        from bci_affect.cli.run import _sources  # noqa: PLC0415

        ns = argparse.Namespace(**vars(args))
        ns.file, ns.master_board, ns.no_publish_inputs = None, "synthetic", False
        sources = _sources(ns)

    # -- the session row ----------------------------------------------------------------
    if resumed is None:
        name = args.session or datetime.now().strftime("ses-%Y%m%d-%H%M%S")
        config = {**_session_args(args), "budget": args.budget}
    else:
        name = resumed.name
    ses_dir = sub_dir / "sessions" / name
    ses_dir.mkdir(parents=True, exist_ok=True)
    part = 1 + sum(1 for _ in ses_dir.glob("predictions-*.jsonl"))  # a resume adds a part
    outputs = PredictionOutputs(
        out=ses_dir / f"predictions-{part}.jsonl", publish=args.predictions_name
    )
    if player is not None:  # maps this part's prediction times back to the recording's
        (ses_dir / f"predictions-{part}.time.json").write_text(
            json.dumps({"lsl_minus_input_s": player.offset_s}) + "\n"
        )

    engine = None
    opened: list = []
    feeders: list = []
    outlets: list = []
    recorder = ui = personaliser = controller = None
    session_id = resumed.id if resumed is not None else None
    stop = threading.Event()  # set at the end, by SIGTERM or Ctrl-C
    finished = threading.Event()  # set when the session ran its course
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status = "interrupted"
    failure: BaseException | None = None  # the store or the disk failed: the session stopped
    try:
        for s, _ in sources:
            s.__enter__()
            opened.append(s)
        streams = [info for s, _ in sources for info in s.streams]
        engine = build_engine(args, realtime=True, sinks=[outputs])
        if player is not None and args.speed > 1:
            from dataclasses import replace  # noqa: PLC0415

            w = engine.signals.window
            engine.signals = replace(
                engine.signals, window=replace(w, face_wait_s=w.face_wait_s * args.speed)
            )
        eng_session = engine.add_session(name, streams=streams)
        if eng_session.model is None:
            raise ConfigError(
                "no EEG stream among the inputs: "
                + ", ".join(f"{i.name!r} (type {i.type})" for i in streams)
            )
        loaded = eng_session.model
        # -- model version to start from ------------------------------------------------
        if latest is None or start_model is not None:
            version = _register_start(store, subject, models_dir, loaded, engine.signals, latest)
            model_path = models_dir / f"v{version}"
        else:
            version, model_path = latest.version, Path(latest.path)
        eng_session.use_model(loaded.model, model_name(subject, version))
        classes = eng_session.classes
        if resumed is None:
            row = store.start_session(
                subject,
                name=name,
                config=config,
                label_scheme=loaded.model.config.label_scheme,
                class_names=list(classes),
                hold=True,  # this process runs it (the next calibrate tells if it was killed)
            )
            session_id = row.id
        else:
            store.reopen_session(session_id)
        outputs.open_outlet(
            classes,
            session=name,
            model=model_name(subject, version),
            source_id=f"bci-affect:predictions:{subject}:{name}:{os.getpid()}",
        )
        marker_info = StreamInfo(
            name="Markers",
            type="Markers",
            sfreq=0.0,
            ch_names=("event",),
            source_id=f"bci-affect:calibration:{subject}:{name}:{os.getpid()}",
            channel_format="string",
        )
        marker_outlet = Outlet(marker_info)
        outlets.append(marker_outlet)
        markers = _marker_sink(marker_outlet, marker_info)

        # -- recording ------------------------------------------------------------------
        tees: dict = {}
        for s, publish in sources:
            if publish:
                from bci_affect.cli.run import _publisher  # noqa: PLC0415

                tee, outs = _publisher(s)
                outlets.extend(outs)
                tees[id(s)] = tee
        if not args.no_record:
            from acquisition.recorder import Recorder  # noqa: PLC0415

            rec_ids = [marker_info.source_id, outputs.outlet_info.source_id]
            if player is not None:
                rec_ids += [i.source_id for i in player.streams]
            else:
                rec_ids += [o.info.source_id for o in outlets if o is not marker_outlet]
            recorder = Recorder(
                ses_dir / f"calibration-{part}.xdf",
                [f"source_id={sid}" for sid in rec_ids],
                subject=subject,
                session=f"{name}-{part}",
                config={"command": "calibrate", **_session_args(args)},
            )
            recorder.start()

        # -- policy, UI, personalisation -------------------------------------------------
        queries = store.queries(session_id)  # spans in the input's time base
        offset = input_offset_s() if input_offset_s is not None else 0.0
        policy = QueryPolicy(
            PolicyConfig(
                budget=args.budget,
                span_s=args.span_s,
                min_interval_s=args.min_interval_s,
                method=args.query_by,
                top_fraction=args.top_fraction,
                explore=args.explore,
                warmup=args.warmup,
                answer_timeout_s=args.answer_timeout_s,
            ),
            duration_s=args.duration,
            used=sum(1 for q in queries if q.status in ("answered", "skipped")),
            spans=[(q.t_start + offset, q.t_end + offset) for q in queries],
        )
        for q in queries:
            if q.status == "open":  # asked before the interruption: too late to answer now
                store.expire(q.id, time.time())
        if args.personalise_every > 0:
            personaliser = Personaliser().start()
        controller = CalibrationController(
            store=store,
            session_id=session_id,
            subject=subject,
            session_name=name,
            engine_session=eng_session,
            policy=policy,
            model_version=version,
            model_path=model_path,
            models_dir=models_dir,
            personaliser=personaliser,
            markers=markers,
            input_offset_s=input_offset_s,
            blocks=_blocks(args),
            duration_s=args.duration,
            settings=ControllerSettings(personalise_every=args.personalise_every),
        )
        eng_session.sinks.append(controller.on_prediction)
        eng_session.window_sinks.append(controller.on_windows)
        ui = _make_ui(args, controller, args.stimuli)
        controller.ui = ui
        ui.start()
        where = getattr(ui, "url", None)
        print(
            f"calibration session {name} (#{session_id}) of subject {subject}: "
            f"model v{version}, {policy.remaining} of {args.budget} queries left"
            + (f"; resumed, {len(store.answered(session_id))} answers so far" if resumed else ""),
            flush=True,
        )
        if where:
            print(f"open {where} in a browser", flush=True)
        for s, _ in sources:
            feeders.append(engine.feed(s, eng_session, tee=tees.get(id(s))))
        t0 = time.monotonic()

        def ended() -> bool:
            if args.duration is not None and time.monotonic() - t0 >= args.duration:
                return True
            if player is not None:
                return not player.running
            return not feeders[0].running

        watcher = threading.Thread(
            target=_watch, args=(stop, ended, finished), name="calibrate-watch", daemon=True
        )
        watcher.start()
        controller.run(stop)
        if finished.is_set():
            status = "finished"
            if player is not None:  # let the inlets deliver what the player pushed
                eng_session.wait_idle(5.0)
    except KeyboardInterrupt:
        status = "interrupted"
    except StorageError as exc:
        failure = exc
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        failure = exc
    finally:
        for s in opened:
            s.stop()
        for f in feeders:
            f.join(5.0)
        if engine is not None:
            engine.close()
        if controller is not None:
            try:
                while not controller.events.empty():
                    controller._handle(controller.events.get())
                wait_s = 30.0 if status == "finished" and failure is None else 0.0
                controller.finish(wait_for_round_s=wait_s)
            except StorageError as exc:
                failure = failure or exc
        if personaliser is not None:
            personaliser.close(wait=False)
        if ui is not None:
            ui.close()
        if recorder is not None and recorder.started:  # before the outlets it records go
            try:
                recorder.stop()
            except Exception as exc:  # noqa: BLE001
                print(f"bci-affect calibrate: warning: recording: {exc}", file=sys.stderr)
        for s in opened:
            try:
                s.__exit__(None, None, None)
            except Exception as exc:  # noqa: BLE001
                print(f"bci-affect calibrate: warning: closing a source: {exc}", file=sys.stderr)
        if player is not None:
            player.stop()
        for o in outlets:
            o.close()
        try:
            outputs.close()
        except OSError as exc:
            print(f"bci-affect calibrate: warning: predictions: {exc}", file=sys.stderr)
        if session_id is not None:
            try:
                store.end_session(session_id, status)
            except StorageError as exc:  # still "running": the next calibrate marks it
                failure = failure or exc
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if failure is not None:
        raise _stopped(failure, session_id) from None
    if session_id is None:
        print("bci-affect calibrate: interrupted before the session started", file=sys.stderr)
        return 130
    report = ses_dir / "report.html"
    try:
        write_session_report(store, session_id, report, predictions=_read_predictions(ses_dir))
    except OSError as exc:
        print(f"bci-affect calibrate: warning: report: {exc}", file=sys.stderr)
    print(format_session_summary(session_summary(store, session_id)), flush=True)
    if controller is not None and controller.trigger_latency_ms:
        lat = controller.trigger_latency_ms
        print(
            f"query on screen after the trigger ({len(lat)}): "
            f"median {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms",
            flush=True,
        )
    if controller is not None and controller.round_seconds:
        kept_out = controller.rejected
        print(
            f"personalisation rounds: {len(controller.round_seconds)} "
            f"({len(controller.round_seconds) - len(kept_out)} adopted, {len(kept_out)} kept "
            "out by the out-of-sample check)",
            flush=True,
        )
        for r in kept_out:
            print(f"  after {r['n_answers']} answers: {r['reason']}", flush=True)
    print(f"report: {report}", flush=True)
    if recorder is not None and recorder.started:
        print(f"recording: {recorder.path}", flush=True)
    if status == "interrupted":
        print(
            f"session interrupted; continue it with: bci-affect calibrate --resume {session_id}",
            flush=True,
        )
    code = report_errors(engine, command="calibrate") if engine is not None else 0
    if controller is not None and controller.error is not None:
        print(f"bci-affect calibrate: error: {controller.error}", file=sys.stderr)
        code = max(code, 1)
    return code


def _watch(stop: threading.Event, ended, finished: threading.Event) -> None:
    """Sets ``finished`` and ``stop`` when the session ran its course (duration, end of the
    replay, source gone)."""
    while not stop.wait(0.1):
        if ended():
            finished.set()
            stop.set()
            return


def _select(source, names):
    from acquisition.files import SelectedStreams  # noqa: PLC0415

    return SelectedStreams(source, names)


def _read_predictions(ses_dir: Path) -> list[dict]:
    from bci_affect.engine import iter_jsonl  # noqa: PLC0415

    out: list[dict] = []
    for f in sorted(ses_dir.glob("predictions-*.jsonl")):
        t = f.with_suffix(".time.json")
        off = json.loads(t.read_text())["lsl_minus_input_s"] if t.exists() else 0.0
        for rec in iter_jsonl(f):
            if rec.get("t_window_end") is not None:  # the store's time base (spans)
                rec["t_window_end"] -= off
            out.append(rec)
    return out


def _marker_sink(outlet, info):
    import numpy as np  # noqa: PLC0415

    from bci_affect.core.chunk import Chunk  # noqa: PLC0415
    from bci_affect.core.clock import local_clock  # noqa: PLC0415

    def push(body: dict, t: float | None) -> None:
        text = json.dumps(body, separators=(",", ":"), default=float)
        stamp = local_clock() if t is None else float(t)
        outlet.push(Chunk(np.array([[text]], dtype=object), np.array([stamp]), info))

    return push


def _register_start(store, subject, models_dir: Path, loaded, signals, latest) -> int:
    """Save the session's starting model as the subject's next version (v0 for a new
    subject) and register it."""
    from bci_affect.models.checkpoint import save_checkpoint  # noqa: PLC0415
    from calibration.personalise import features_metadata  # noqa: PLC0415

    version = 0 if latest is None else latest.version + 1
    out = models_dir / f"v{version}"
    meta = {
        "features": features_metadata(loaded.model, signals),
        "calibration_start": {"subject": subject, "from": loaded.name},
    }
    save_checkpoint(loaded.model, out, metadata=meta)
    n_answers = len(store.answered(subject=subject))
    return store.register_model(
        subject,
        path=str(out),
        parent=None if latest is None else latest.version,
        n_labels=0,
        session=None,
        metrics={"n_answers": n_answers, "from": loaded.name},
    )


def _make_ui(args: argparse.Namespace, controller, stimuli):
    if args.ui == "terminal":
        from calibration.terminal import TerminalUI  # noqa: PLC0415

        return TerminalUI(controller.on_answer, controller.on_shown)
    from calibration.web import WebUI  # noqa: PLC0415

    return WebUI(
        controller.on_answer,
        controller.on_shown,
        host=args.host,
        port=args.port,
        title=f"bci-affect calibration: {controller.subject}",
        stimuli=stimuli,
    )
