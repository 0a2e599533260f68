"""Core types shared by every package: chunks, stream metadata, the source protocol, errors."""

from bci_affect.core.chunk import CHANNEL_FORMATS, Chunk, StreamInfo, concat, numpy_dtype
from bci_affect.core.clock import local_clock
from bci_affect.core.errors import (
    BciAffectError,
    ConfigError,
    DeviceError,
    FileFormatError,
    ShapeError,
    StreamNotFoundError,
)
from bci_affect.core.source import Source, pick_stream, read_all

__all__ = [
    "CHANNEL_FORMATS",
    "BciAffectError",
    "Chunk",
    "ConfigError",
    "DeviceError",
    "FileFormatError",
    "ShapeError",
    "Source",
    "StreamInfo",
    "StreamNotFoundError",
    "concat",
    "local_clock",
    "numpy_dtype",
    "pick_stream",
    "read_all",
]
