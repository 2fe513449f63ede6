"""Shared fixtures: the real Bibtex files are read in place from ../shared and skipped when absent."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIBTEX_DIR = REPO.parent / "shared" / "data" / "xc" / "Bibtex"


@pytest.fixture(scope="session")
def bibtex_dir() -> Path:
    """Folder with Bibtex_data.txt and the split files; skips the test when it is absent."""
    if not (BIBTEX_DIR / "Bibtex_data.txt").exists():
        pytest.skip(f"real Bibtex data not found at {BIBTEX_DIR}")
    return BIBTEX_DIR


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point the per-user XC cache ($SLIDE_CACHE_DIR) at a fresh temporary folder."""
    cache_dir = tmp_path / "user-cache"
    monkeypatch.setenv("SLIDE_CACHE_DIR", str(cache_dir))
    return cache_dir
