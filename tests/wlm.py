"""Worklist peers for the tests: a hospital's worklist server and a modality's query.

- ``WlmServer``: DCMTK ``wlmscpfs`` serving ``.wl`` files that ``dump2dcm`` builds from
  dump text. Its data directory holds one folder per AE title, with a ``lockfile``
  and the ``.wl`` files; it reads them afresh for every query, so ``put`` and
  ``remove`` change what the next query sees.
- ``OrthancWorklists``: Orthanc with its worklists plugin, reading the same files.
- ``findscu()``: DCMTK ``findscu -W`` as the modality; the answers as datasets.
- ``comparable()``: an answer as plain values, for comparing two servers' answers.

Orders are written as dicts keyed by DICOM keywords; a list of dicts is a sequence.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from tests.peers import (
    LOOPBACK,
    Orthanc,
    _check_free,
    _Peer,
    _spawn,
    _tail,
    _terminate,
    free_port,
    peer_env,
    wait_port,
)

ORTHANC_WORKLISTS_PLUGIN = "/usr/share/orthanc/plugins/libModalityWorklists.so"
Order = Mapping[str, Any]


# --------------------------------------------------------------------------- files


def dump_text(order: Order, charset: str = "ISO_IR 192") -> str:
    """`order` in dump2dcm's text form, Specific Character Set first."""
    return "\n".join([f"(0008,0005) CS [{charset}]", *_dump_lines(order)]) + "\n"


def _dump_lines(order: Order) -> list[str]:
    lines = []
    for keyword, value in sorted(order.items(), key=lambda kv: tag_for_keyword(kv[0])):
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise KeyError(f"not a DICOM keyword: {keyword}")
        where = f"({tag >> 16:04x},{tag & 0xFFFF:04x})"
        if isinstance(value, list):
            lines.append(f"{where} SQ")
            for item in value:
                lines += ["(fffe,e000) -", *_dump_lines(item), "(fffe,e00d) -"]
            lines.append("(fffe,e0dd) -")
        else:
            lines.append(f"{where} {dictionary_VR(tag)} [{value}]")
    return lines


def write_order(folder: Path, name: str, order: Order, *, charset: str = "ISO_IR 192",
                encoding: str = "utf-8") -> Path:
    """Build `folder/name.wl` from `order` with dump2dcm (bytes in `encoding`)."""
    dump = folder / f".{name}.dump"
    dump.write_bytes(dump_text(order, charset).encode(encoding))
    target = folder / f"{name}.wl"
    partial = folder / f".{name}.part"
    done = subprocess.run(["dump2dcm", "-q", "-g", str(dump), str(partial)],
                          capture_output=True, text=True, check=False, timeout=30)
    dump.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"dump2dcm failed: {done.stderr}")
    partial.rename(target)  # a server reading the folder never sees half a file
    return target


class _OrderFolder:
    """A folder of .wl files."""

    folder: Path

    def put(self, name: str, order: Order, **kwargs: str) -> None:
        write_order(self.folder, name, order, **kwargs)

    def remove(self, name: str) -> None:
        (self.folder / f"{name}.wl").unlink()


# --------------------------------------------------------------------------- servers


class WlmServer(_Peer, _OrderFolder):
    """DCMTK wlmscpfs on a free loopback port, answering as `aet`.

    ``-dfr``: files without every type 1 attribute are served too (the tests need
    faulty orders); ``-csk``: answers carry the files' Specific Character Set.
    """

    def __init__(self, *, aet: str = "RIS", port: int | None = None) -> None:
        self.aet = aet
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="wlmscpfs-"))
        self.folder = self.workdir / "db" / aet
        self.folder.mkdir(parents=True)
        (self.folder / "lockfile").touch()

    @property
    def log_path(self) -> Path:
        return self.workdir / "wlmscpfs.log"

    def start(self) -> None:
        _check_free(self.port)
        args = ["wlmscpfs", "--data-files-path", str(self.workdir / "db"), "-dfr", "-csk",
                "--single-process", "--disable-host-lookup", "--acse-timeout", "10",
                "--dimse-timeout", "20", str(self.port)]
        self.proc = _spawn(args, self.log_path)
        try:
            wait_port(LOOPBACK, self.port, 10.0, proc=self.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{_tail(self.log_path)}") from exc

    def stop(self) -> None:
        """Stop serving; the files stay, so `start()` serves them again."""
        _terminate(self.proc, grace_s=0)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


class OrthancWorklists(_OrderFolder):
    """Orthanc answering worklist queries from its worklists plugin's folder."""

    def __init__(self, *, aet: str = "ORTHANC_RIS") -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="orthanc-wl-"))
        self.orthanc = Orthanc(aet=aet, extra_config={
            "Plugins": [ORTHANC_WORKLISTS_PLUGIN],
            "Worklists": {"Enable": True, "Database": str(self.folder)},
            "DicomAlwaysAllowFindWorklist": True,
            "DefaultEncoding": "Utf8",
        })

    @property
    def aet(self) -> str:
        return self.orthanc.aet

    @property
    def port(self) -> int:
        return self.orthanc.dicom_port

    def __enter__(self) -> OrthancWorklists:
        self.orthanc.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.orthanc.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- the modality


def findscu(port: int, called_aet: str, keys: Iterable[str], *, calling_aet: str = "MODALITY",
            host: str = LOOPBACK, timeout_s: float = 20.0) -> list[Dataset]:
    """A worklist query as a modality sends it (`-k` keys, e.g. "PatientName=Mül*" or
    "ScheduledProcedureStepSequence[0].Modality=CT"); the answers, in order.
    Raises RuntimeError unless the final response is success."""
    with tempfile.TemporaryDirectory(prefix="findscu-") as out:
        args = ["findscu", "-v", "-W", "-aet", calling_aet, "-aec", called_aet, "-to", "10",
                "-ta", "10", "-td", "15", "-X", "-od", out]
        for key in keys:
            args += ["-k", key]
        done = subprocess.run([*args, host, str(port)], env=peer_env(), capture_output=True,
                              text=True, timeout=timeout_s, check=False,
                              stdin=subprocess.DEVNULL)
        final = [line for line in (done.stdout + done.stderr).splitlines()
                 if "Received Final Find Response" in line]
        if done.returncode != 0 or not final or "(Success)" not in final[-1]:
            raise RuntimeError(f"findscu failed ({done.returncode}): {final or done.stderr[-500:]}")
        return [dcmread(path) for path in sorted(Path(out).glob("rsp*.dcm"))]


def comparable(ds: Dataset) -> dict[str, Any]:
    """Plain values keyed by keyword; empty values and Specific Character Set left out
    (servers differ in echoing keys they have no value for)."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag.group in (0x0000, 0x0002) or elem.keyword == "SpecificCharacterSet":
            continue
        if elem.VR == "SQ":
            items = [c for c in (comparable(item) for item in elem.value or []) if c]
            if items:
                out[elem.keyword] = items
        elif not elem.is_empty:
            value = elem.value
            out[elem.keyword] = [str(v) for v in value] if elem.VM > 1 else str(value)
    return out


def answer_set(answers: list[Dataset]) -> list[dict[str, Any]]:
    """Answers as a sorted list of comparable values (servers answer in any order)."""
    return sorted((comparable(ds) for ds in answers), key=repr)
