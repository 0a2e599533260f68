"""bci-affect: real-time EEG + webcam affect recognition on the LSL clock."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bci-affect")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
