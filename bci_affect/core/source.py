"""The source protocol: anything that yields :class:`~bci_affect.core.chunk.Chunk` objects.

Every source (a BrainFlow board, an LSL inlet, an XDF or text file, a camera) is used the same
way, live or offline::

    with source:
        for chunk in source:      # chunks of any of the source's streams, in time order
            ...

``source.streams`` lists the :class:`StreamInfo` of every stream the source yields, known once
the source is open. Iteration ends when a file is exhausted or a live source is stopped
(``source.stop()``, safe to call from another thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from bci_affect.core.chunk import Chunk, StreamInfo, concat
from bci_affect.core.errors import StreamNotFoundError


@runtime_checkable
class Source(Protocol):
    """What every source offers. See the module docstring."""

    @property
    def streams(self) -> list[StreamInfo]: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc: object) -> None: ...

    def __iter__(self) -> Iterator[Chunk]: ...

    def stop(self) -> None: ...


def read_all(chunks: Iterable[Chunk]) -> dict[str, Chunk]:
    """Gather every chunk into one chunk per stream name (insertion order = first seen)."""
    parts: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        parts.setdefault(chunk.info.name, []).append(chunk)
    return {name: concat(cs) for name, cs in parts.items()}


def pick_stream(
    streams: Iterable[StreamInfo], *, name: str | None = None, type: str | None = None
) -> StreamInfo:
    """The first stream matching ``name`` and/or ``type`` (case-insensitive for type).

    Raises
    ------
    StreamNotFoundError
        Naming every stream available, so the user can choose.
    """
    streams = list(streams)
    for s in streams:
        if (name is None or s.name == name) and (type is None or s.type.lower() == type.lower()):
            return s
    want = " and ".join(f"{k} {v!r}" for k, v in (("name", name), ("type", type)) if v is not None)
    have = ", ".join(
        f"{s.name!r} (type {s.type!r}, {s.n_chans} ch, {s.sfreq:g} Hz)" for s in streams
    )
    raise StreamNotFoundError(f"no stream with {want}; available: {have or 'none'}")
