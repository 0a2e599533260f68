"""``bci-affect replay FILE``: replay a recording through the same source interface as a live
session, and score it with a model.

Without ``--realtime`` the file is read in process as fast as possible, chunk by chunk, and
per-stream statistics are printed (samples, duration, effective rate, gaps, NaNs) with the
replay throughput. With ``--realtime`` every stream is published as an LSL outlet with its
recorded timing (``--speed`` scales it) until the recording ends or Ctrl-C, so any LSL tool
(``bci-affect run``, LabRecorder, MNE-LSL) sees a live session.

With ``--model`` (or ``--out`` / ``--report``) the windows are scored by the inference engine:
in process, every window in order (deterministic: the same file gives the same predictions);
with ``--realtime``, the published streams are read back through LSL inlets and scored live,
exactly as ``bci-affect run --lsl`` would, and the predictions are published on an
``AffectPredictions`` stream.
"""

from __future__ import annotations

import argparse
import threading
import time

from bci_affect.cli._import_options import add_import_options, import_kwargs
from bci_affect.cli.run import add_model_arguments

_EPILOG = """\
examples:
  bci-affect replay rec/S01/ses1.xdf                       per-stream statistics
  bci-affect replay rec/S01/ses1.xdf --realtime            publish on LSL in real time
  bci-affect replay rec/S01/ses1.xdf --model models/S01 --out S01.jsonl --report S01.html
  bci-affect replay rec/S01/ses1.xdf --model default --realtime --speed 4
      score through LSL, as a live session would be, four times faster than real time

--model default (or --out/--report without --model) scores with the bundled model (an
untrained model predicting from the face expressions when none is bundled or it does not fit
the recording's montage); --model untrained always uses that untrained model.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "replay",
        help="replay a recording in process or in real time as LSL streams; score it",
        description=(
            "Replay a recording (XDF, OpenBCI GUI .txt, BrainFlow .csv). By default the file "
            "is read in process as fast as possible and per-stream statistics are printed. "
            "With --realtime its streams are published as LSL outlets with the recorded "
            "timing, timestamps shifted onto the current LSL clock (the shift is printed and "
            "published in each stream's desc as replay_offset_s). With --model the windows "
            "are scored and the predictions written, summarised and drawn."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", metavar="FILE", help="recording: .xdf, .xdfz, .txt or .csv")
    add_import_options(p)
    p.add_argument(
        "--realtime",
        action="store_true",
        help="publish the streams as LSL outlets with the recorded timing",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=None,
        metavar="X",
        help="with --realtime: playback speed, 2 = twice as fast (default: 1)",
    )
    p.add_argument(
        "--streams",
        nargs="+",
        metavar="NAME",
        default=None,
        help="replay only these streams (names as `bci-affect inspect` lists them)",
    )
    p.add_argument(
        "--loop",
        action="store_true",
        help="with --realtime: start over when the recording ends, until Ctrl-C",
    )
    p.add_argument(
        "--chunk-s",
        type=float,
        default=None,
        metavar="S",
        help="in process: seconds of recording per chunk (default: 0.1; 0.5 when scoring)",
    )
    p.add_argument(
        "--source-id-prefix",
        default=None,
        metavar="P",
        help="with --realtime: published source_id is P:<recorded source_id> "
        "(default: bci-affect-replay)",
    )
    add_model_arguments(p, live=True)
    p.set_defaults(func=run, max_pending=64)


def _scoring(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) is not None for k in ("model", "out", "report"))


def run(args: argparse.Namespace) -> int:
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415

    args.score = _scoring(args)
    if not args.realtime:
        for flag, value in (("--speed", args.speed), ("--loop", args.loop or None)):
            if value is not None:
                raise ConfigError(f"{flag} only applies with --realtime")
        if args.source_id_prefix is not None:
            raise ConfigError("--source-id-prefix only applies with --realtime")
        if args.score:
            return score_in_process(args.file, args, command="replay")
        chunk_s = 0.1 if args.chunk_s is None else args.chunk_s
        return replay_in_process(
            args.file, streams=args.streams, chunk_s=chunk_s, options=import_kwargs(args)
        )
    if args.chunk_s is not None:
        raise ConfigError("--chunk-s applies to in-process replay only (not with --realtime)")
    if args.score:
        return _realtime_scored(args)
    return _realtime(args)


def replay_in_process(
    file: str,
    *,
    streams: list[str] | None = None,
    chunk_s: float = 0.1,
    command: str = "replay",
    options: dict | None = None,
) -> int:
    """Read ``file`` through its source as fast as possible; print per-stream statistics.

    ``options``: the import options of a text file (:func:`import_kwargs`).
    """
    from acquisition.files import open_recording, summarize  # noqa: PLC0415
    from bci_affect.cli.inspect import format_table, recording_warnings  # noqa: PLC0415

    with recording_warnings(command):
        t0 = time.perf_counter()
        source = open_recording(file, streams=streams, chunk_s=chunk_s, **(options or {}))
        with source:
            summaries = summarize(source)
        elapsed = time.perf_counter() - t0
    print(format_table(summaries))
    _throughput(summaries, elapsed)
    return 0


def _throughput(summaries, elapsed: float, what: str = "replayed") -> None:
    firsts = [s.first_timestamp for s in summaries if s.first_timestamp is not None]
    lasts = [s.last_timestamp for s in summaries if s.last_timestamp is not None]
    span = max(lasts) - min(firsts) if firsts else 0.0
    n = sum(s.n_samples for s in summaries)
    speed = f", {span / elapsed:.0f}x real time" if elapsed > 0 and span > 0 else ""
    print(f"\n{what} {n} samples ({span:.3f} s of recording) in {elapsed:.3f} s{speed}", flush=True)


class _Progress:
    """Prints how far through the recording the replay is, every ``step`` (fraction)."""

    def __init__(self, t_first: float | None, t_last: float | None, session, step: float = 0.1):
        self.t0 = t_first
        self.span = (t_last - t_first) if t_first is not None and t_last is not None else None
        self.session = session
        self.step = step
        self.next = step
        self.start = time.perf_counter()

    def __call__(self, t: float) -> None:
        if not self.span or self.span <= 0:
            return
        frac = (t - self.t0) / self.span
        if frac + 1e-9 >= self.next:
            while self.next <= frac + 1e-9:
                self.next += self.step
            st = self.session.stats
            print(
                f"  {min(frac, 1.0) * 100:3.0f} %  {t - self.t0:7.1f} of {self.span:.1f} s of "
                f"recording, {st.n_windows} windows, "
                f"{time.perf_counter() - self.start:.1f} s",
                flush=True,
            )


def score_in_process(
    file: str,
    args: argparse.Namespace,
    *,
    command: str,
    title: str | None = None,
    print_table: bool = True,
    keep: list | None = None,
) -> int:
    """Replay ``file`` in process through the engine (in order, deterministic) and report.

    Prints the per-stream table, progress, the throughput and the summary; writes ``args.out``
    and ``args.report`` (trials from the recording's markers are marked on it). ``keep``
    receives the :class:`~bci_affect.cli.run.PredictionOutputs`. Returns the exit status.
    """
    from acquisition.files import open_recording, summarize  # noqa: PLC0415
    from bci_affect.cli.inspect import format_table, recording_warnings  # noqa: PLC0415
    from bci_affect.cli.run import PredictionOutputs, build_engine, report_errors  # noqa: PLC0415
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415

    chunk_s = 0.5 if args.chunk_s is None else args.chunk_s
    outputs = PredictionOutputs(out=args.out, report=args.report)
    if keep is not None:
        keep.append(outputs)
    name = args.session or _stem(file)
    with recording_warnings(command):
        t0 = time.perf_counter()
        source = open_recording(file, streams=args.streams, chunk_s=chunk_s, **import_kwargs(args))
        with source:
            engine = build_engine(args, realtime=False, sinks=[outputs])
            wait_s = engine.signals.window.face_wait_s
            if not 0 < chunk_s < wait_s:
                raise ConfigError(
                    f"--chunk-s must be > 0 and shorter than the windows' wait for late face "
                    f"frames ({wait_s:g} s), got {chunk_s:g}: with longer chunks, windows would "
                    "be cut before the face frames of their chunk arrive"
                )
            session = engine.add_session(name, streams=source.streams)
            if session.model is None:
                have = ", ".join(f"{i.name!r} (type {i.type})" for i in source.streams)
                raise ConfigError(
                    f"{file} has no EEG stream to score (streams: {have or 'none'}); "
                    "choose the streams with --streams"
                )
            print(
                f"scoring {file} with {session.model.name} on {engine.device} "
                f"({session.signals.window.window_s:g} s windows every "
                f"{session.signals.window.hop_s:g} s)",
                flush=True,
            )
            if session.montage_line():
                print(session.montage_line(), flush=True)
            progress = _Progress(
                getattr(source, "t_first", None), getattr(source, "t_last", None), session
            )

            markers: list[tuple[float, str]] = []

            def chunks():
                for chunk in source:
                    session.push(chunk)
                    if chunk.info.type == "Markers" and chunk.info.is_string:
                        markers.extend(zip(chunk.times.tolist(), chunk.data[0], strict=True))
                    if chunk.n_times:
                        progress(float(chunk.times[-1]))
                    yield chunk

            summaries = summarize(source, chunks())
            engine.close()
        elapsed = time.perf_counter() - t0
    if print_table:
        print(format_table(summaries))
    _throughput(summaries, elapsed, "replayed and scored")
    from bci_affect.engine.report import trials_from_markers  # noqa: PLC0415

    outputs.trials = trials_from_markers(markers)
    outputs.finish(title=title or f"bci-affect {command}: {file}", notes=[f"recording: {file}"])
    return report_errors(engine, command=command)


def _stem(file: str) -> str:
    from pathlib import Path  # noqa: PLC0415

    name = Path(file).name
    for ext in (".xdf.gz", ".xdfz", ".xdf", ".txt", ".csv"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _open_for_player(args: argparse.Namespace, speed: float):  # noqa: ANN202  (a Source)
    """The recording, opened with the import options, in the chunks a :class:`Player` pushes
    (its 20 ms push interval times the speed)."""
    from acquisition.files import open_recording  # noqa: PLC0415

    chunk_s = max(0.01, 0.02 * speed)
    return open_recording(args.file, chunk_s=chunk_s, **import_kwargs(args))


def _realtime(args: argparse.Namespace) -> int:
    from acquisition.player import DEFAULT_SOURCE_ID_PREFIX, Player  # noqa: PLC0415
    from bci_affect.cli.inspect import recording_warnings  # noqa: PLC0415

    speed = 1.0 if args.speed is None else args.speed
    with recording_warnings("replay"):
        player = Player(
            _open_for_player(args, speed),
            speed=speed,
            loop=args.loop,
            streams=args.streams,
            source_id_prefix=args.source_id_prefix or DEFAULT_SOURCE_ID_PREFIX,
        )
        player.start()
    try:
        _announce(args, player, speed)
        while not player.join(timeout=0.5):
            pass
        # Keep the outlets a moment so consumers receive the last samples before they close.
        threading.Event().wait(1.0)
    finally:
        player.stop()
    total = sum(player.n_pushed.values())
    print(f"done: pushed {total} samples", flush=True)
    return 0


def _announce(args: argparse.Namespace, player, speed: float) -> None:
    print(
        f"publishing {len(player.streams)} streams of {args.file} on LSL at {speed:g}x, "
        f"timestamps shifted by {player.offset_s:+.6f} s"
        + (" (looping)" if args.loop else "")
        + "; Ctrl-C to stop",
        flush=True,
    )
    width = max(len(s.name) for s in player.streams)
    for s in player.streams:
        rate = f"{s.sfreq:g} Hz" if s.sfreq > 0 else "irregular"
        print(
            f"  {s.name.ljust(width)}  type {s.type}, {s.n_chans} ch, {rate}, "
            f"source_id {s.source_id}",
            flush=True,
        )


def _realtime_scored(args: argparse.Namespace) -> int:
    """Publish with a :class:`Player`, read back through LSL inlets, score live, report."""
    from dataclasses import replace  # noqa: PLC0415

    from acquisition.lsl_inlet import LslSource, quiet_liblsl  # noqa: PLC0415
    from acquisition.player import DEFAULT_SOURCE_ID_PREFIX, Player  # noqa: PLC0415
    from bci_affect.cli.inspect import recording_warnings  # noqa: PLC0415
    from bci_affect.cli.run import PredictionOutputs, build_engine, report_errors  # noqa: PLC0415
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415

    quiet_liblsl()
    speed = 1.0 if args.speed is None else args.speed
    outputs = PredictionOutputs(out=args.out, report=args.report, publish=args.predictions_name)
    engine = build_engine(args, realtime=True, sinks=[outputs])
    # Windows wait face_wait_s of *stream* time for late face frames; faster than real time,
    # that is less wall-clock time, so the wait grows with the speed.
    window = engine.signals.window
    engine.signals = replace(
        engine.signals, window=replace(window, face_wait_s=window.face_wait_s * max(1.0, speed))
    )
    name = args.session or _stem(args.file)
    with recording_warnings("replay"):
        player = Player(
            _open_for_player(args, speed),
            speed=speed,
            loop=args.loop,
            streams=args.streams,
            source_id_prefix=args.source_id_prefix or DEFAULT_SOURCE_ID_PREFIX,
            wait_for_consumers_s=10.0,
        )
        player.start()
    feeder = None
    session = None
    try:
        _announce(args, player, speed)
        source = LslSource([f"source_id={s.source_id}" for s in player.streams], timeout_s=10.0)
        with source:
            session = engine.add_session(name, streams=source.streams)
            if session.model is None:
                raise ConfigError(f"{args.file} has no EEG stream to score")
            outputs.open_outlet(
                session.classes,
                session=name,
                model=session.model.name,
                source_id=f"bci-affect:predictions:{name}",
            )
            print(
                f"scoring the replay with {session.model.name} on {engine.device}; predictions "
                f"on LSL stream {args.predictions_name!r}",
                flush=True,
            )
            if session.montage_line():
                print(session.montage_line(), flush=True)
            feeder = engine.feed(source, session)
            t_start = time.monotonic()
            next_status = t_start + 5.0
            while not player.join(timeout=0.2):
                if time.monotonic() >= next_status:
                    print(f"[{time.monotonic() - t_start:6.1f} s] {outputs.status()}", flush=True)
                    next_status += 5.0
            # Wait until the inlets have delivered every sample the player pushed.
            deadline = time.monotonic() + 10.0
            wake = threading.Event()
            while time.monotonic() < deadline and feeder.running:
                got = session.stats.n_samples
                if all(got.get(k, 0) >= n for k, n in player.n_pushed.items()):
                    break
                wake.wait(0.05)
            source.stop()
            feeder.join(5.0)
    except KeyboardInterrupt:
        pass
    finally:
        player.stop()
        engine.close()
        outputs.close()
    if session is not None:
        st = session.stats
        print(
            f"done: pushed {sum(player.n_pushed.values())} samples; {st.n_windows} windows, "
            f"{st.n_scored} scored, {st.n_skipped} skipped",
            flush=True,
        )
    outputs.finish(title=f"bci-affect replay --realtime: {args.file}", notes=[args.file])
    return report_errors(engine, command="replay")
