"""One dependency list: ``environment.yml`` (conda) agrees with ``pyproject.toml`` (pip).

Every runtime dependency and every optional extra of pyproject.toml is listed in
environment.yml, in the conda list or its pip section, under the same normalised name and
with the same version constraint; and environment.yml lists nothing pyproject.toml lacks.
An optional extra that the conda environment leaves out on purpose (the multi-GB ``torch``)
is listed as a commented-out entry (``# - torch==2.13.0``) so that its pin is still checked;
runtime dependencies and the ``test`` extra must be real entries.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
ENVIRONMENT = ROOT / "environment.yml"
NOT_PACKAGES = {"python", "pip"}  # environment.yml entries that are not project dependencies
COMMENTED = re.compile(r"^\s*#\s*-\s+([A-Za-z0-9][A-Za-z0-9_.\-]*\s*(?:[<>=!~].*)?)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _conda_spec(entry: str) -> tuple[str, SpecifierSet]:
    """``name>=1.0`` (conda match spec, the forms this file uses) as (name, specifier)."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)\s*(.*?)\s*", entry)
    assert m, f"environment.yml: cannot read the entry {entry!r}"
    name, spec = m.groups()
    if re.fullmatch(r"=[^=].*", spec):  # conda's "=1.2" means 1.2.*
        spec = f"=={spec[1:]}.*"
    return _norm(name), SpecifierSet(spec.replace(" ", ""))


def _pip_spec(entry: str) -> tuple[str, SpecifierSet]:
    req = Requirement(entry)
    return _norm(req.name), req.specifier


def _pyproject() -> dict:
    """{(group, normalised name): specifier}; group is "runtime" or "extra <name>"."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    out = {}
    groups = [("runtime", project["dependencies"])]
    groups += [(f"extra {k}", v) for k, v in project.get("optional-dependencies", {}).items()]
    for group, entries in groups:
        for entry in entries:
            name, spec = _pip_spec(entry)
            out[(group, name)] = spec
    return out


def _environment() -> dict:
    """{normalised name: (specifier, how listed)}; how is "conda", "pip" or "commented"."""
    env = yaml.safe_load(ENVIRONMENT.read_text(encoding="utf-8"))
    out = {}

    def add(name, spec, how):
        assert name not in out, f"environment.yml lists {name} twice"
        out[name] = (spec, how)

    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for pip_entry in entry["pip"]:
                if not pip_entry.startswith("-"):  # "-e ." and pip options
                    add(*_pip_spec(pip_entry), "pip")
        else:
            add(*_conda_spec(str(entry)), "conda")
    for line in ENVIRONMENT.read_text(encoding="utf-8").splitlines():
        m = COMMENTED.match(line)
        if m:
            add(*_pip_spec(m.group(1).strip()), "commented")
    return out


PYPROJECT_DEPS = _pyproject()


@pytest.mark.parametrize("group,name", sorted(PYPROJECT_DEPS), ids=lambda v: str(v))
def test_pyproject_dependency_is_in_environment(group, name):
    env = _environment()
    assert name in env, f"pyproject.toml ({group}) needs {name}; environment.yml does not list it"
    spec, how = env[name]
    want = PYPROJECT_DEPS[(group, name)]
    assert spec == want, (f"{name}: pyproject.toml ({group}) says {str(want) or 'any version'}, "
                          f"environment.yml ({how}) says {str(spec) or 'any version'}")
    if group in ("runtime", "extra test"):
        assert how != "commented", f"{name} ({group}) is only a comment in environment.yml"


def test_environment_lists_nothing_else():
    known = {name for _, name in PYPROJECT_DEPS}
    extra = sorted(set(_environment()) - known - NOT_PACKAGES)
    assert not extra, f"environment.yml lists {extra}, which pyproject.toml does not"


def test_python_and_the_project_itself():
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    env = _environment()
    assert env["python"][0] == SpecifierSet(project["requires-python"])
    pip = next(e["pip"] for e in yaml.safe_load(ENVIRONMENT.read_text(encoding="utf-8"))["dependencies"]
               if isinstance(e, dict))
    assert "-e ." in pip, "environment.yml should install the project itself (pip: -e .)"


def test_the_reader_sees_conda_pip_and_commented_entries():
    env = _environment()
    assert env["numpy"][1] == "conda"
    assert env["tensorflow"][1] == "pip"
    assert env["torch"][1] == "commented"
    assert _conda_spec("numpy=1.26") == ("numpy", SpecifierSet("==1.26.*"))
    assert _conda_spec("PyYAML >=6.0") == ("pyyaml", SpecifierSet(">=6.0"))
