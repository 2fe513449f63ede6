"""The engine's JIT cache is keyed on the source of every engine module: an edit anywhere recompiles.

Numba checks only the timestamp of the file that defines a kernel, and the kernels of ``tables.py``
inline the hash functions of ``hashing.py``: before the keyed cache, an edit to ``hashing.py`` left
``LSHIndex.codes`` returning the old codes until ``__pycache__`` was deleted.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import slide
from slide import settings

SCRIPT = """
import json, numpy as np, slide
from slide.engine.tables import LSHIndex
index = LSHIndex("dwta", 64, 50, 4, 4, seed=5)
codes = index.codes((np.array([3, 40], np.int32), np.array([1.0, 2.0], np.float32)))[0]
print(json.dumps({"file": slide.__file__, "codes": codes.tolist()}))
"""


def _run(copy: Path, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(copy), NUMBA_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600, cwd=copy)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve().is_relative_to(copy.resolve())  # the copy, not the installed tree
    return out


@pytest.mark.slow
def test_an_edit_to_hashing_reaches_the_cached_kernels_of_tables(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(Path(slide.__file__).parent, copy / "slide", ignore=shutil.ignore_patterns("__pycache__"))
    before = _run(copy, tmp_path / "cache")
    hashing = copy / "slide" / "engine" / "hashing.py"
    text, n = re.subn(r"^DENSIFY_PROBES = 32$", "DENSIFY_PROBES = 1", hashing.read_text(), flags=re.M)
    assert n == 1
    hashing.write_text(text)
    after = _run(copy, tmp_path / "cache")  # the same cache folder, as a user who edits and reruns
    fresh = _run(copy, tmp_path / "fresh")  # the edited code compiled from scratch
    assert fresh["codes"] != before["codes"]  # the edit matters for this vector (most bins are empty)
    assert after["codes"] == fresh["codes"]


def test_cache_folder_is_keyed_under_the_users_root(tmp_path, monkeypatch):
    from numba.core import config

    from slide.engine import tables

    assert config.CACHE_DIR == str(settings.JIT_CACHE_DIR)
    assert settings.JIT_CACHE_DIR.name == f"slide-{settings.jit_cache_key()}"
    # kernels defined at import have their cache in the keyed folder
    assert Path(tables.retrieve._cache._cache_path).is_relative_to(settings.JIT_CACHE_DIR)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert settings._cache_root() == tmp_path
    try:
        assert settings.configure_jit_cache() == tmp_path / f"slide-{settings.jit_cache_key()}"
    finally:
        config.CACHE_DIR = str(settings.JIT_CACHE_DIR)
