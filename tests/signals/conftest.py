"""Fixtures and helpers of the signals tests: synthetic EEG with known content, the OpenBCI
recording from ../shared/data, and chunk splitters."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from bci_affect.core import Chunk, StreamInfo, read_all

OPENBCI_FILE = "openbci/OpenBCI_GUI-v6-blinks-jawClench-alpha.txt"
NAMES_8 = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")


def make_eeg(
    rng: np.random.Generator,
    *,
    seconds: float = 20.0,
    sfreq: float = 250.0,
    ch_names: tuple[str, ...] = NAMES_8,
    t0: float = 1000.0,
    offset_uv: float = 30_000.0,
    dtype: type = np.float32,
) -> Chunk:
    """Pink-ish noise + a 10 Hz alpha rhythm + large per-channel DC offsets and a slow drift."""
    n = int(round(seconds * sfreq))
    n_chans = len(ch_names)
    t = np.arange(n) / sfreq
    noise = np.cumsum(rng.standard_normal((n_chans, n)), axis=1) * 0.5
    noise -= np.linspace(noise[:, :1], noise[:, -1:], n, axis=1)[..., 0]
    white = rng.standard_normal((n_chans, n)) * 3.0
    alpha = 8.0 * np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 2 * np.pi, (n_chans, 1)))
    dc = rng.uniform(-offset_uv, offset_uv, (n_chans, 1)) + 20.0 * t / seconds
    data = (noise + white + alpha + dc).astype(dtype)
    info = StreamInfo(
        "EEG",
        "EEG",
        sfreq,
        ch_names,
        ("microvolts",) * n_chans,
        "synthetic",
        channel_format="float32" if dtype == np.float32 else "double64",
    )
    return Chunk(data, t0 + t, info)


def split(chunk: Chunk, n_pieces: int) -> list[Chunk]:
    """``chunk`` cut into ``n_pieces`` pieces of uneven length (time order kept)."""
    rng = np.random.default_rng(n_pieces)
    cuts = np.sort(rng.choice(np.arange(1, chunk.n_times), n_pieces - 1, replace=False))
    bounds = [0, *cuts.tolist(), chunk.n_times]
    return [
        replace(chunk, data=chunk.data[:, a:b], times=chunk.times[a:b])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]


def split_every(chunk: Chunk, seconds: float) -> list[Chunk]:
    """``chunk`` cut into pieces of ``seconds`` (at the nominal rate)."""
    step = max(1, int(round(seconds * chunk.sfreq)))
    return [
        replace(chunk, data=chunk.data[:, a : a + step], times=chunk.times[a : a + step])
        for a in range(0, chunk.n_times, step)
    ]


@pytest.fixture(scope="session")
def openbci_eeg(shared_data) -> Chunk:
    """The EEG stream of the OpenBCI GUI sample recording (8 ch, 250 Hz, ~90 s)."""
    from acquisition.textfiles import OpenBciTextSource

    path = shared_data / OPENBCI_FILE
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with OpenBciTextSource(path) as src:
        streams = read_all(src)
    return streams["EEG"]


class Helpers:
    """The helpers above, handed to tests by the ``sig`` fixture."""

    make_eeg = staticmethod(make_eeg)
    split = staticmethod(split)
    split_every = staticmethod(split_every)
    NAMES_8 = NAMES_8


@pytest.fixture
def sig() -> type[Helpers]:
    return Helpers
