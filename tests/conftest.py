"""Shared fixtures: the real Bibtex files come from ../shared (or $SLIDE_SHARED_DATA) and are
skipped when absent. Tests get a read-only copy in a temporary folder, never the shared folder
itself, so no test can write beside shared data whatever its permissions (read-only in CI,
writable in a user's copy); a session check fails the run if anything appears there anyway."""

import os
import shutil
import stat
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Folder holding ``xc/Bibtex``: $SLIDE_SHARED_DATA, else ../shared/data beside the repository.
SHARED_DATA = Path(os.environ.get("SLIDE_SHARED_DATA") or REPO.parent / "shared" / "data")
BIBTEX_DIR = SHARED_DATA / "xc" / "Bibtex"
BIBTEX_FILES = ("Bibtex_data.txt", "bibtex_trSplit.txt", "bibtex_tstSplit.txt")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the tests marked slow (pipelines, fresh JIT caches); CI does")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow (the README's test command and CI do)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_bandwidth_cache(tmp_path_factory):
    """Benchmarks run by the tests (also in subprocesses) keep their bandwidth measurement in a
    temporary file, never in the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIDE_BANDWIDTH_CACHE", str(tmp_path_factory.mktemp("bandwidth") / "bandwidth.json"))
        yield


def _listing(folder: Path):
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


@pytest.fixture(scope="session", autouse=True)
def shared_data_untouched():
    """Fail the session if any test wrote into the shared Bibtex folder."""
    before = _listing(BIBTEX_DIR) if BIBTEX_DIR.is_dir() else None
    yield
    if before is not None:
        after = _listing(BIBTEX_DIR)
        assert after == before, f"tests wrote into the shared data folder {BIBTEX_DIR}: " \
                                f"{sorted(set(after) - set(before))}"


@pytest.fixture(scope="session")
def bibtex_source_dir() -> Path:
    """The shared folder with Bibtex_data.txt and the split files (read it, never write it)."""
    if not (BIBTEX_DIR / "Bibtex_data.txt").exists():
        pytest.skip(f"real Bibtex data not found at {BIBTEX_DIR} (set SLIDE_SHARED_DATA)")
    return BIBTEX_DIR


@pytest.fixture(scope="session")
def bibtex_dir(bibtex_source_dir, tmp_path_factory) -> Path:
    """A read-only copy of the Bibtex files in a temporary folder (folder mode r-x, files r--)."""
    copy = tmp_path_factory.mktemp("shared-copy") / "Bibtex"
    copy.mkdir()
    for name in BIBTEX_FILES:
        shutil.copy2(bibtex_source_dir / name, copy / name)
        (copy / name).chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    copy.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    yield copy
    copy.chmod(stat.S_IRWXU)  # let pytest remove its temporary folders


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point the per-user XC cache ($SLIDE_CACHE_DIR) at a fresh temporary folder."""
    cache_dir = tmp_path / "user-cache"
    monkeypatch.setenv("SLIDE_CACHE_DIR", str(cache_dir))
    return cache_dir
