"""The benchmark studies, generated once and cached under build/bench-data.

- ``ct``: one CT series, 300 slices of 512x512 (large instances, MB/s).
- ``mg``: one mammography study (very large instances).
- ``small``: many 8 KB instances (tiny CT slices, 64x52 16-bit) in many studies,
  5,000 in 200 studies by default (instances per second).

`twin` makes a copy of a study under new UIDs (another modality's study of the
same size), for the concurrent step.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import generate_uid

from appliance.demo.synthetic import write_ct_study, write_mg_study

# Fixed UIDs and date: the cache holds the same files whatever day it was made.
_STUDY_DATE = "20240101"
_CT_UID = "1.2.826.0.1.3680043.8.498.1001"
_MG_UID = "1.2.826.0.1.3680043.8.498.1002"
_SMALL_UID = "1.2.826.0.1.3680043.8.498.1003"
SMALL_COUNT = 5000  # instances in the small set by default
SMALL_PER_STUDY = 25
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


def write_small_studies(out_dir: Path, *, studies: int, per_study: int, rows: int, cols: int,
                        uid_root: str, study_date: str) -> list[Path]:
    """``studies`` CT studies of ``per_study`` tiny slices each, one folder per study."""
    paths: list[Path] = []
    for i in range(studies):
        paths += write_ct_study(out_dir / f"S{i + 1:04d}", slices=per_study, rows=rows,
                                cols=cols, seed=i + 1, study_uid=f"{uid_root}.{i + 1}",
                                patient_id=f"FLXS{i + 1:04d}", study_date=study_date)
    return paths


WRITERS: dict[str, tuple[Callable[..., list[Path]], dict[str, Any]]] = {
    "ct": (write_ct_study, {"slices": 300, "rows": 512, "cols": 512, "seed": 1,
                            "study_uid": _CT_UID, "study_date": _STUDY_DATE}),
    "mg": (write_mg_study, {"seed": 2, "study_uid": _MG_UID, "study_date": _STUDY_DATE}),
    "small": (write_small_studies, {"studies": SMALL_COUNT // SMALL_PER_STUDY,
                                    "per_study": SMALL_PER_STUDY, "rows": 64, "cols": 52,
                                    "uid_root": _SMALL_UID, "study_date": _STUDY_DATE}),
}


def small_params(count: int) -> dict[str, Any]:
    """The small set's parameters for ``count`` instances (rounded to whole studies)."""
    return {**WRITERS["small"][1], "studies": max(1, round(count / SMALL_PER_STUDY))}


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


def _make(folder: Path, params: dict[str, Any], write: Callable[[], list[Path]],
          what: str, log: Callable[[str], None]) -> tuple[Path, ...]:
    """The cached files in ``folder`` made with ``params``, else ``write()`` them there."""
    files = _cached(folder, params)
    if files is None:
        log(f"generating {what} in {folder} ...")
        started = time.monotonic()
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        files = tuple(write())
        manifest = {"params": params, "files": [str(p.relative_to(folder)) for p in files]}
        (folder / _MANIFEST).write_text(json.dumps(manifest))
        log(f"  {len(files)} files in {time.monotonic() - started:.0f} s")
    return files


def study(root: Path, name: str, log: Callable[[str], None] = print,
          small_count: int = SMALL_COUNT) -> Study:
    """The named study from the cache, writing it first if it is missing, partial or stale.
    ``small_count`` sizes the small set (a smaller one is cached beside the default)."""
    writer, params = WRITERS[name]
    folder = root / name
    if name == "small" and small_count != SMALL_COUNT:
        params = small_params(small_count)
        folder = root / f"small-{params['studies'] * SMALL_PER_STUDY}"
    files = _make(folder, params, lambda: writer(folder, **params), f"the {name} study", log)
    return Study(name, files)


def twin(root: Path, base: Study, tag: str, log: Callable[[str], None] = print) -> Study:
    """A copy of ``base`` under new study, series, SOP and frame-of-reference UIDs and
    patient ID (derived from ``tag``): the same bytes from another modality."""
    source = base.files[0].parent if base.name != "small" else base.files[0].parent.parent
    folder = root / f"{source.name}-twin-{tag}"
    params = {"source": str(source), "files": len(base.files), "tag": tag}

    def write() -> list[Path]:
        out = []
        for f in base.files:
            ds = dcmread(f)
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                            "FrameOfReferenceUID"):
                if keyword in ds:
                    setattr(ds, keyword, generate_uid(entropy_srcs=[tag, str(ds[keyword].value)]))
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID = f"{ds.PatientID}-{tag}"[:64]
            path = folder / f.relative_to(source)
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            out.append(path)
        return out

    return Study(f"{base.name}-{tag}", _make(folder, params, write, f"a twin of {base.name}", log))


def warm_cache(studies: list[Study]) -> None:
    """Read every file once so each sender starts with the files in the page cache."""
    for s in studies:
        for f in s.files:
            with f.open("rb") as fh:
                while fh.read(1 << 20):
                    pass
