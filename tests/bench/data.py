"""The benchmark studies, generated once and cached under build/bench-data."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.demo.synthetic import write_ct_study, write_mg_study

# Fixed UIDs and date: the cache holds the same files whatever day it was made.
_STUDY_DATE = "20240101"
_CT_UID = "1.2.826.0.1.3680043.8.498.1001"
_MG_UID = "1.2.826.0.1.3680043.8.498.1002"
_SMALL_UID = "1.2.826.0.1.3680043.8.498.1003"
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Study:
    """One cached study: its files and their total size."""

    name: str
    files: tuple[Path, ...]

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @property
    def megabytes(self) -> float:
        return self.size_bytes / 1e6


WRITERS: dict[str, tuple[Callable[..., list[Path]], dict[str, Any]]] = {
    "ct": (write_ct_study, {"slices": 300, "rows": 512, "cols": 512, "seed": 1,
                            "study_uid": _CT_UID, "study_date": _STUDY_DATE}),
    "mg": (write_mg_study, {"seed": 2, "study_uid": _MG_UID, "study_date": _STUDY_DATE}),
    # Small instances (64x64, 8 KB of pixels): the cost per message, not per byte.
    "small": (write_ct_study, {"slices": 500, "rows": 64, "cols": 64, "seed": 3,
                               "study_uid": _SMALL_UID, "study_date": _STUDY_DATE}),
}


def _cached(folder: Path, params: dict[str, Any]) -> tuple[Path, ...] | None:
    """The files of a complete cached study written with ``params``, or None."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("params") != params:
        return None
    files = tuple(folder / n for n in manifest.get("files", []))
    return files if files and all(f.is_file() for f in files) else None


def study(root: Path, name: str, log: Callable[[str], None] = print) -> Study:
    """The named study from the cache, writing it first if it is missing, partial or stale."""
    writer, params = WRITERS[name]
    folder = root / name
    files = _cached(folder, params)
    if files is None:
        log(f"generating the {name} study in {folder} ...")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files = tuple(writer(folder, **params))
        manifest = {"params": params, "files": [p.name for p in files]}
        (folder / _MANIFEST).write_text(json.dumps(manifest))
    return Study(name, files)


def warm_cache(studies: list[Study]) -> None:
    """Read every file once so each sender starts with the files in the page cache."""
    for s in studies:
        for f in s.files:
            with f.open("rb") as fh:
                while fh.read(1 << 20):
                    pass
