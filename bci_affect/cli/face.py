"""``bci-affect face``: face features and expression probabilities of images or video frames."""

from __future__ import annotations

import argparse
import json
import sys

_EPILOG = """\
examples:
  bci-affect face photo.jpg
  bci-affect face session.mp4 --json --every-n 5 > faces.jsonl
  bci-affect face a.jpg b.png clip.mov --json --embedding

--json prints one JSON object per image or analysed frame:
  file, frame (number in the video; 0 for an image), t (seconds from the video's first
  frame; null for an image), face_present, n_faces, quality (0-1), occluded (hand over the
  face; null when not checked), expression {angry, disgust, fear, happy, sad, surprise,
  neutral: probabilities}, top_expression, head_pose {yaw_deg, pitch_deg, roll_deg},
  geometry {mouth_open ... eye_open_right}, and with --embedding the 128-float embedding.
  Without a face: expression, top_expression, head_pose and geometry are null.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "face",
        help="face features and expression probabilities per image or video frame",
        description="Track the largest face in images or in the frames of videos and print "
        "its features and the 7 FER2013 expression probabilities.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="IMAGE|VIDEO", help="images and/or video files")
    p.add_argument("--json", action="store_true", help="JSON lines (fields below)")
    p.add_argument(
        "--every-n", type=int, default=1, metavar="N", help="videos: every N-th frame (default 1)"
    )
    p.add_argument("--start", type=float, default=0.0, metavar="S", help="videos: from S seconds")
    p.add_argument("--stop", type=float, metavar="S", help="videos: up to S seconds")
    p.add_argument(
        "--max-faces",
        type=int,
        default=2,
        metavar="N",
        help="faces tracked at once; the largest is reported (default 2)",
    )
    p.add_argument(
        "--no-hands",
        action="store_true",
        help="skip the hand-over-face check (faster; occluded is then null)",
    )
    p.add_argument("--embedding", action="store_true", help="--json: include the embedding")
    p.set_defaults(func=run)


def _text_line(rec: dict) -> str:
    where = rec["file"] if rec["t"] is None else f"{rec['file']} t={rec['t']:.3f}s"
    if not rec["face_present"]:
        return f"{where}: no face"
    expr = sorted(rec["expression"].items(), key=lambda kv: -kv[1])[:3]
    top = ", ".join(f"{k} {v:.2f}" for k, v in expr)
    pose = rec["head_pose"]
    occ = " occluded" if rec["occluded"] else ""
    return (
        f"{where}: {rec['n_faces']} face(s), quality {rec['quality']:.2f}{occ}; {top}; "
        f"yaw {pose['yaw_deg']:+.0f} pitch {pose['pitch_deg']:+.0f} roll {pose['roll_deg']:+.0f}"
    )


def run(args: argparse.Namespace) -> int:
    from acquisition.face_features import FaceFeaturesConfig, analyze_file  # noqa: PLC0415
    from acquisition.face_tracking import FaceTrackerConfig  # noqa: PLC0415
    from bci_affect.models.fer import load_fer_model  # noqa: PLC0415

    config = FaceFeaturesConfig(
        tracker=FaceTrackerConfig(
            max_num_faces=args.max_faces, hand_check_every=0 if args.no_hands else 6
        )
    )
    model = load_fer_model()
    for path in args.paths:
        for rec in analyze_file(
            path,
            config=config,
            every_n=args.every_n,
            start_s=args.start,
            stop_s=args.stop,
            embedding=args.embedding,
            model=model,
        ):
            line = json.dumps(rec) if args.json else _text_line(rec)
            print(line, flush=True, file=sys.stdout)
    return 0
