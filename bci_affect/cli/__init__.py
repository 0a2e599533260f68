"""The single ``bci-affect`` command: the composition root.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a ``run(args) -> int`` function. Subcommands stay
thin: parse, build configs, call library code. Heavy imports (torch, mediapipe, brainflow,
pylsl) happen inside ``run`` so that ``bci-affect --help`` is instant.

Errors raised on purpose (:class:`~bci_affect.core.errors.BciAffectError`) print one line on
stderr and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from bci_affect import __version__
from bci_affect.core.errors import BciAffectError

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = (
    "devices",
    "stream",
    "camera",
    "record",
    "replay",
    "convert",
    "inspect",
    "face",
    "run",
    "demo",
    "simulate",
    "train",
    "benchmark",
    "calibrate",
)

logger = logging.getLogger("bci_affect")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bci-affect",
        description="Real-time EEG + webcam affect recognition on the LSL clock.",
    )
    parser.add_argument("--version", action="version", version=f"bci-affect {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("BCI_AFFECT_LOG_LEVEL", "WARNING"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity on stderr (default: WARNING)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"bci_affect.cli.{name}")
        except ModuleNotFoundError as exc:  # a command not built yet in this tree
            if exc.name != f"bci_affect.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if args.log_level != "DEBUG":
        from acquisition.lsl_inlet import quiet_liblsl  # noqa: PLC0415

        quiet_liblsl()  # liblsl's INFO lines would bury the command's own output
    try:
        return int(args.func(args) or 0)
    except BciAffectError as exc:
        print(f"bci-affect {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bci-affect {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `bci-affect inspect F --json | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
