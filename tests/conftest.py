"""Shared fixtures and markers.

Markers: ``slow`` (runs by default), ``gpu`` (skipped without CUDA), ``hardware`` (needs
``--run-hardware``), ``lsl`` (opens outlets/inlets on localhost). Tests that open LSL streams
name them with the ``uid`` fixture so concurrent runs on one machine never see each other's.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("BCI_AFFECT_RAISE_STREAM_ERRORS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-hardware", action="store_true", help="run tests that need a real board or camera"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_hw = config.getoption("--run-hardware")
    cuda = None
    for item in items:
        if "hardware" in item.keywords and not run_hw:
            item.add_marker(pytest.mark.skip(reason="needs --run-hardware"))
        if "gpu" in item.keywords:
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture
def uid() -> str:
    """A unique suffix for stream names and source ids of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project (real recordings and face media)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found")
    return SHARED_DATA


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
