"""Exceptions of bci-affect.

Every error a user can cause derives from :class:`BciAffectError`; the command line prints its
message as one line on stderr and exits non-zero. Messages name the argument, the value and
what is valid or what to do.
"""


class BciAffectError(Exception):
    """Base class of every error bci-affect raises on purpose."""


class ConfigError(BciAffectError, ValueError):
    """A configuration value or command-line argument is invalid."""


class ShapeError(BciAffectError, ValueError):
    """Arrays whose shapes do not agree (e.g. samples vs timestamps)."""


class DeviceError(BciAffectError, RuntimeError):
    """A board, camera or LSL stream is unreachable or stopped answering."""


class StreamNotFoundError(BciAffectError, LookupError):
    """No stream matched the request; the message lists what is available."""


class FileFormatError(BciAffectError, ValueError):
    """A file is corrupt, truncated or not in the expected format."""
