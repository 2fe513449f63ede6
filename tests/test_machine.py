"""The machine a figure was taken on, in words: CPU ids and cache sizes that tell apart CPUs a virtual
machine gives one name (two "AMD EPYC" VMs here ran the engine 2x apart)."""

import platform

import pytest

from slide import bandwidth, runs

EPYC = "processor\t: {p}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\nstepping\t: 1\n\n"


def _cpuinfo(tmp_path, family, model):
    path = tmp_path / f"cpuinfo-{family}-{model}"
    path.write_text("".join(EPYC.format(p=p, family=family, model=model) for p in range(2)))
    return path


def _sysfs(tmp_path, caches):
    root = tmp_path / "cache"
    for i, (level, kind, size) in enumerate(caches):
        d = root / f"index{i}"
        d.mkdir(parents=True)
        for name, text in (("level", level), ("type", kind), ("size", size)):
            if text is not None:
                (d / name).write_text(f"{text}\n")
    return root


def test_caches_are_read_by_level_and_kind(tmp_path):
    root = _sysfs(tmp_path, [(1, "Data", "32K"), (1, "Instruction", "32K"), (2, "Unified", "1024K"),
                             (3, "Unified", "32768K"), (4, "Unified", None)])  # no size: left out
    assert runs.cpu_caches(root) == {"L1d": 32 * 2**10, "L1i": 32 * 2**10, "L2": 2**20, "L3": 32 * 2**20}
    assert runs.cpu_caches(tmp_path / "missing") == {}


def test_one_cpu_name_with_different_ids_or_caches_reads_differently(tmp_path):
    zen4 = runs.cpu_model(_cpuinfo(tmp_path, 25, 17), {"L1d": 32 * 2**10, "L1i": 32 * 2**10, "L2": 2**20,
                                                       "L3": 32 * 2**20})
    assert zen4 == "AMD EPYC (family 25 model 17 stepping 1; L1d 32 KiB, L2 1 MiB, L3 32 MiB)"
    zen5 = runs.cpu_model(_cpuinfo(tmp_path, 26, 2), {"L1d": 48 * 2**10, "L2": 2**20, "L3": 32 * 2**20})
    assert zen5 == "AMD EPYC (family 26 model 2 stepping 1; L1d 48 KiB, L2 1 MiB, L3 32 MiB)"
    # nothing to add: the bare name; no model name at all: the platform's word for the processor
    (tmp_path / "plain").write_text("model name\t: Some CPU\n")
    assert runs.cpu_model(tmp_path / "plain", {}) == "Some CPU"
    (tmp_path / "arm").write_text("processor\t: 0\nBogoMIPS\t: 50.00\n")
    assert runs.cpu_model(tmp_path / "arm", {}) == (platform.processor() or platform.machine())
    assert runs.cpu_model(tmp_path / "missing", {"L2": 512 * 2**10}).endswith("(L2 512 KiB)")


def test_the_bandwidth_cache_keeps_two_such_cpus_apart(monkeypatch):
    keys = set()
    for cpu in ("AMD EPYC (family 25 model 17 stepping 1)", "AMD EPYC (family 26 model 2 stepping 1)"):
        monkeypatch.setattr(runs, "cpu_model", lambda cpu=cpu: cpu)
        keys.add(bandwidth.machine_key(2, 2**27))
    assert len(keys) == 2


@pytest.mark.parametrize("caches, expected", [({"L3": 8 * 2**20, "L2": 2**20}, 8 * 2**20), ({}, 32 * 2**20)])
def test_the_update_arrays_are_sized_from_the_largest_cache(monkeypatch, caches, expected):
    monkeypatch.setattr(runs, "cpu_caches", lambda: caches)
    assert bandwidth.last_level_cache_bytes() == expected
