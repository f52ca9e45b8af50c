"""Shared fixtures: the real third-party data in ../shared/data, and small planted tables."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the real test data is missing: expected {SHARED_DATA} (../shared/data beside the repo)")
    return SHARED_DATA
