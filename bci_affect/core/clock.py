"""The one clock: LSL's ``local_clock()`` (seconds, monotonic, shared by every LSL program on
this machine). Every timestamp bci-affect produces is on it."""

from __future__ import annotations


def local_clock() -> float:
    """Seconds on the LSL clock of this machine (``pylsl.local_clock``)."""
    import pylsl  # noqa: PLC0415  (liblsl loads on first use, not at import of bci_affect)

    return pylsl.local_clock()
