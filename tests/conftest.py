"""Shared fixtures. Real driving snippets are read from ../shared/data/real (never copied here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _real_data_dir() -> Path:
    env = os.environ.get("SELFOCC_REAL_DATA")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared" / "data" / "real"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """`../shared/data/real` (or $SELFOCC_REAL_DATA). A missing folder is a failure, not a skip."""
    path = _real_data_dir()
    if not (path / "README.md").is_file():
        pytest.fail(f"real data snippets not found at {path} (set SELFOCC_REAL_DATA)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Caches (stereo reference depth) go to a per-session folder, never the user's ~/.cache."""
    old = os.environ.get("SELFOCC_CACHE_DIR")
    os.environ["SELFOCC_CACHE_DIR"] = str(tmp_path_factory.mktemp("selfocc_cache"))
    yield
    if old is None:
        os.environ.pop("SELFOCC_CACHE_DIR", None)
    else:
        os.environ["SELFOCC_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``):
    CI is a shared 2-core machine where one thread avoids oversubscription (measured 0.3 s vs
    4 s per tiny training step under load)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
