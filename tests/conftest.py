"""Shared fixtures: the real-data folder (may be absent) and synthetic CMU-MOSI sets."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repo; tests using it skip when it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only CI and the lab machines have it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mosi_label_file(shared_data: Path) -> Path:
    path = shared_data / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
    if not path.is_file():
        pytest.skip(f"official label file {path} is absent")
    return path


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """Synthetic CMU-MOSI, scale "small" (12 videos x 10 segments), seed 0. Treat as read-only."""
    from mmsenti.data.synthetic import write_synthetic_mosi

    return write_synthetic_mosi(tmp_path_factory.mktemp("synthetic_small"), scale="small", seed=0)


@pytest.fixture(scope="session")
def synthetic_mosi(tmp_path_factory) -> Path:
    """Synthetic CMU-MOSI at full scale (93 videos, 2,199 segments), seed 0. Treat as read-only."""
    from mmsenti.data.synthetic import write_synthetic_mosi

    return write_synthetic_mosi(tmp_path_factory.mktemp("synthetic_mosi"), scale="mosi", seed=0)
