"""Shared test fixtures: paths, deterministic seeds, the official golden fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VS_KEEP_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"


@pytest.fixture(autouse=True)
def _seed() -> None:
    import torch

    torch.manual_seed(0)


def fixture_path(name: str) -> Path:
    """Path of an official golden fixture; skips the test (with the reason) when the shared folder is absent."""
    p = FIXTURES / name
    if not p.exists():
        pytest.skip(f"golden fixture {p} not available (set VS_KEEP_SHARED to the shared/ folder)")
    return p


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one intra-op thread (on a busy 2-core machine two threads mostly wait on each other).
    Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
