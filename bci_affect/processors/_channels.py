"""Resolve channel selections (names or indices) against a stream's channel names."""

from __future__ import annotations

import re
from collections.abc import Sequence

from bci_affect.core.errors import ConfigError

_FRONTAL_POLAR = re.compile(r"^(Fp|AF)(\d+|z)$", re.IGNORECASE)


def resolve(spec: Sequence[str | int], ch_names: Sequence[str], what: str) -> list[int]:
    """Indices of the channels in ``spec`` (names, or integer indices).

    Raises
    ------
    ConfigError
        Naming the channel that is missing and the stream's channels.
    """
    out = []
    for item in spec:
        if isinstance(item, int) and not isinstance(item, bool):
            if not -len(ch_names) <= item < len(ch_names):
                raise ConfigError(
                    f"{what}: channel index {item} is out of range for a stream of "
                    f"{len(ch_names)} channels"
                )
            out.append(item % len(ch_names))
        elif item in ch_names:
            out.append(list(ch_names).index(item))
        else:
            raise ConfigError(
                f"{what}: no channel named {item!r}; the stream has {', '.join(ch_names)}"
            )
    return out


def resolve_one(item: str | int, ch_names: Sequence[str], what: str) -> int:
    return resolve([item], ch_names, what)[0]


def frontal_polar(ch_names: Sequence[str]) -> list[int]:
    """Channels named like frontal-polar / anterior-frontal sites (Fp1, Fp2, Fpz, AF3, ...)."""
    return [i for i, n in enumerate(ch_names) if _FRONTAL_POLAR.match(n.strip())]
