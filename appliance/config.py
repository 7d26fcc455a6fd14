"""The TOML config as frozen dataclasses.

Field names are the TOML keys of PRODUCT.md, spelled the same. Every error
names the file, line and key, and says how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BoxConfig:
    ae_title: str = "FLUXBOX"
    port: int = 11112
    data_dir: Path = Path("./var/fluxbox")
    key_dir: Path | None = None  # None: "<data_dir>-key", beside the data directory
    allowed_calling_aets: tuple[str, ...] = ()
    reserve_mb: int = 512  # below this much free space, new C-STOREs get 0xA700
    retention_days: float = 7.0  # complete studies are purged after this long
    max_pdu: int = 0  # 0: unlimited

    @property
    def key_path(self) -> Path:
        return self.key_dir if self.key_dir is not None else Path(f"{self.data_dir}-key")


@dataclass(frozen=True)
class DetectConfig:
    mode: str = "auto"  # "auto" | "fixed"
    fixed_site: str = ""
    isolate: bool = True


@dataclass(frozen=True)
class TransmitConfig:
    batch: str = "study"  # "count" | "size" | "study"
    batch_count: int = 50
    batch_mb: int = 200
    associations: int = 1
    adaptive: bool = True
    max_kbps: int = 0
    study_quiet_s: float = 30.0
    forward: str = "on-study-complete"  # or "streaming"
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    connect_timeout_s: float = 10.0
    dimse_timeout_s: float = 60.0


@dataclass(frozen=True)
class Geofence:
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True)
class PolicyConfig:
    links: tuple[str, ...] = ("wired", "wifi", "cellular")
    windows: tuple[str, ...] = ()


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    ae_title: str
    host: str
    port: int
    transfer_syntaxes: tuple[str, ...] = ()
    match: tuple[tuple[str, str], ...] = ()  # (DICOM keyword, pattern) pairs
    commitment: bool = False  # ask for Storage Commitment after delivery


@dataclass(frozen=True)
class WorklistConfig:
    ae_title: str
    host: str
    port: int
    sync_interval_s: float = 300.0
    days_ahead: int = 2


@dataclass(frozen=True)
class SiteConfig:
    id: str
    name: str = ""
    geofence: Geofence | None = None
    networks: tuple[str, ...] = ()
    ssids: tuple[str, ...] = ()
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    destinations: tuple[DestinationConfig, ...] = ()
    worklist: WorklistConfig | None = None


@dataclass(frozen=True)
class Config:
    box: BoxConfig = field(default_factory=BoxConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    transmit: TransmitConfig = field(default_factory=TransmitConfig)
    sites: tuple[SiteConfig, ...] = ()
    source: str = "<embedded default>"

    def site(self, site_id: str) -> SiteConfig | None:
        return next((s for s in self.sites if s.id == site_id), None)
