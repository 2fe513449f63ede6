"""Declarative registry of XC datasets (``datasets.yaml`` beside this module).

``get_dataset(name)`` returns a :class:`DatasetSpec`; ``list_datasets()`` the names.
Both accept ``registry=`` to use another YAML file or an in-memory dict (tests do),
in either the full form ``{"version": 1, "datasets": {name: entry}}`` or just
``{name: entry}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from slide.errors import ConfigError

__all__ = ["DatasetSpec", "load_registry", "get_dataset", "list_datasets", "DEFAULT_REGISTRY"]

DEFAULT_REGISTRY = Path(__file__).with_name("datasets.yaml")

_STAT_KEYS = ("features", "labels", "train_points", "test_points", "avg_labels_per_point",
              "avg_points_per_label", "avg_features_per_point")
_LAYOUT_FILES = {"train_test": ("train", "test"), "split": ("data", "train_split", "test_split")}
_ENTRY_KEYS = {"title", "source", "drive_id", "mirror_id", "md5", "archive", "folder", "layout",
               "files", "split_column", "stats", "synth"}


@dataclass(frozen=True)
class DatasetSpec:
    """One registry entry (see the comments at the top of ``datasets.yaml``)."""

    name: str
    title: str
    folder: str
    layout: str
    files: dict
    stats: dict
    drive_id: str | None = None
    mirror_id: str | None = None
    md5: str | None = None
    archive: str | None = None
    split_column: int = 1
    source: str = ""
    synth: dict = field(default_factory=dict)

    @property
    def file_names(self) -> list[str]:
        """The files expected inside ``folder``, in layout order."""
        return [self.files[k] for k in _LAYOUT_FILES[self.layout]]

    @property
    def download_ids(self) -> list[str]:
        return [i for i in (self.drive_id, self.mirror_id) if i]

    @property
    def archive_name(self) -> str:
        return self.archive or f"{self.folder}.zip"

    def stat(self, key: str):
        return self.stats.get(key)


def _parse_entry(name: str, entry: Mapping[str, Any], where: str) -> DatasetSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: dataset {name!r} must be a mapping")
    unknown = set(entry) - _ENTRY_KEYS
    if unknown:
        raise ConfigError(f"{where}: dataset {name!r} has unknown keys {sorted(unknown)}")
    layout = entry.get("layout", "train_test")
    if layout not in _LAYOUT_FILES:
        raise ConfigError(f"{where}: dataset {name!r} layout must be one of {sorted(_LAYOUT_FILES)}")
    files = dict(entry.get("files") or {})
    missing = [k for k in _LAYOUT_FILES[layout] if not files.get(k)]
    if missing:
        raise ConfigError(f"{where}: dataset {name!r} lacks files {missing} for layout {layout}")
    for f in files.values():
        if not isinstance(f, str) or "/" in f or "\\" in f or f in (".", ".."):
            raise ConfigError(f"{where}: dataset {name!r} file name {f!r} must be a plain name")
    folder = entry.get("folder")
    if not isinstance(folder, str) or not folder or "/" in folder or folder in (".", ".."):
        raise ConfigError(f"{where}: dataset {name!r} needs a plain 'folder' name")
    stats = dict(entry.get("stats") or {})
    unknown = set(stats) - set(_STAT_KEYS)
    if unknown:
        raise ConfigError(f"{where}: dataset {name!r} has unknown stats {sorted(unknown)}")
    for k in ("features", "labels", "train_points", "test_points"):
        if not isinstance(stats.get(k), int) or stats[k] < 0:
            raise ConfigError(f"{where}: dataset {name!r} stats.{k} must be a non-negative integer")
    for k in _STAT_KEYS:
        stats.setdefault(k, None)
    md5 = entry.get("md5")
    if md5 is not None and (not isinstance(md5, str) or len(md5) != 32):
        raise ConfigError(f"{where}: dataset {name!r} md5 must be 32 hex digits or null")
    split_column = entry.get("split_column", 1)
    if not isinstance(split_column, int) or split_column < 1:
        raise ConfigError(f"{where}: dataset {name!r} split_column must be an integer >= 1")
    return DatasetSpec(
        name=name, title=str(entry.get("title") or name), folder=folder, layout=layout,
        files=files, stats=stats, drive_id=entry.get("drive_id"), mirror_id=entry.get("mirror_id"),
        md5=md5.lower() if md5 else None, archive=entry.get("archive"), split_column=split_column,
        source=str(entry.get("source") or ""), synth=dict(entry.get("synth") or {}))


def load_registry(registry=None) -> dict[str, DatasetSpec]:
    """Parse a registry: None (the packaged YAML), a YAML path, or a dict."""
    if isinstance(registry, Mapping) and registry and all(isinstance(v, DatasetSpec) for v in registry.values()):
        return dict(registry)
    if registry is None or isinstance(registry, (str, Path)):
        path = Path(registry) if registry is not None else DEFAULT_REGISTRY
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"dataset registry {path} not found") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"dataset registry {path}: invalid YAML: {exc}".replace("\n", " ")) from None
        where = str(path)
    elif isinstance(registry, Mapping):
        data, where = registry, "registry"
    else:
        raise ConfigError(f"registry must be a path or a dict, got {type(registry).__name__}")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping at top level")
    entries = data["datasets"] if "datasets" in data else data
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{where}: 'datasets' must be a mapping")
    return {str(k).lower(): _parse_entry(str(k).lower(), v, where) for k, v in entries.items()}


def list_datasets(registry=None) -> list[str]:
    """Names of the registered datasets."""
    return sorted(load_registry(registry))


def get_dataset(name: str, registry=None) -> DatasetSpec:
    """The registry entry for ``name`` (case-insensitive)."""
    reg = load_registry(registry)
    key = str(name).lower()
    if key not in reg:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(sorted(reg))}")
    return reg[key]
