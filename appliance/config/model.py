"""The config as frozen dataclasses. Field names are the TOML keys of PRODUCT.md, spelled
the same; the defaults are the embedded default's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from appliance.signals import LINK_CLASSES
from appliance.upper_layer import DEFAULT_MAX_PDU
from appliance.worklist.config import WorklistConfig


@dataclass(frozen=True)
class ModalityConfig:
    """A modality that asks for Storage Commitment: where a report goes when the
    association that asked for it has closed (`[box.modalities.AE_TITLE]`)."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class BoxConfig:
    ae_title: str = "FLUXBOX"
    port: int = 11112
    data_dir: Path = Path("./var/fluxbox")
    key_dir: Path | None = None  # None: "<data_dir>-key", beside the data directory
    allowed_calling_aets: tuple[str, ...] = ()
    # "accept" | "refuse" a calling AE title nobody configured; "": refuse only when
    # allowed_calling_aets names some (PRODUCT.md: an empty list lets any modality in)
    unknown_callers: str = ""
    listen: tuple[str, ...] = ()  # addresses and interface names of the DICOM port; (): all
    reserve_mb: int = 512  # below this much free space, new C-STOREs get 0xA700
    retention_days: float = 7.0  # complete studies are purged after this long
    max_pdu: int = DEFAULT_MAX_PDU  # the maximum PDU length announced to modalities
    tls_cert: Path | None = None  # DICOM TLS on the box's own port: its certificate and key
    tls_key: Path | None = None
    tls_ca: Path | None = None  # if set, modalities must present a certificate it signed
    status_led: str = ""  # the front-panel LED's name under /sys/class/leds; "": none
    metrics_listen: str = ""  # "address:port" or "interface:port" of Prometheus; "": off
    commitment_mode: str = "box"  # Storage Commitment for modalities: "box" | "pacs"
    modalities: tuple[ModalityConfig, ...] = ()  # where commitment reports go, by calling AE

    @property
    def refuses_unknown(self) -> bool:
        """Whether a calling AE title the config does not name is refused."""
        if self.unknown_callers:
            return self.unknown_callers == "refuse"
        return bool(self.allowed_calling_aets)

    def modality(self, ae_title: str) -> ModalityConfig | None:
        return next((m for m in self.modalities if m.ae_title == ae_title), None)

    @property
    def key_path(self) -> Path:
        return self.key_dir if self.key_dir is not None else Path(f"{self.data_dir}-key")


@dataclass(frozen=True)
class DetectConfig:
    mode: str = "auto"  # "auto" | "fixed"
    fixed_site: str = ""
    isolate: bool = True
    hold_s: float = 60.0  # a newly detected site must hold this long before it takes over
    adopt_within_s: float = 0.0  # held studies adopt a site confirmed this soon; 0: never
    adopt_radius_m: float = 300.0  # ... if the vehicle stayed within this distance
    node_interval_s: float = 60.0  # C-ECHO probes of each site's PACS, at most this often
    gps_max_age_s: float = 10.0  # an older fix gives no vote
    gps_max_error_m: float = 100.0  # a fix less precise than this gives no vote
    gpsd: str = "127.0.0.1:2947"  # where gpsd listens


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
    dimse_timeout_s: float = 60.0  # the least time allowed for an answer; adaptive may allow more
    max_kbps_wired: int = 0  # per link class caps, on top of max_kbps; 0: none
    max_kbps_wifi: int = 0
    max_kbps_cellular: int = 0
    stall_s: float = 20.0  # no bytes moving for this long: the association is dropped
    ttl_h: float = 24.0  # a study waiting longer needs attention (it keeps trying)
    mpps_wait_s: float = 600.0  # after MPPS COMPLETED, wait this long for listed instances


@dataclass(frozen=True)
class Geofence:
    lat: float
    lon: float
    radius_m: float


@dataclass(frozen=True)
class PolicyConfig:
    links: tuple[str, ...] = LINK_CLASSES
    windows: tuple[str, ...] = ()  # "HH:MM-HH:MM", optionally after days: "Mon-Fri 19:00-23:00"
    docked_ssids: tuple[str, ...] = ()  # if set, Wi-Fi carries studies only on these SSIDs
    cellular_mb_per_day: int = 0  # cellular budget; 0: unlimited
    cellular_mb_per_month: int = 0
    urgent_match: tuple[tuple[str, str], ...] = ()  # e.g. { StudyDescription = "*STAT*" }
    urgent_links: tuple[str, ...] = LINK_CLASSES  # urgent studies may use these


@dataclass(frozen=True)
class DestinationConfig:
    name: str
    ae_title: str
    host: str
    port: int
    transfer_syntaxes: tuple[str, ...] = ()
    match: tuple[tuple[str, str], ...] = ()  # (DICOM keyword, pattern) pairs
    commitment: bool = False  # ask for Storage Commitment after delivery
    tls_ca: Path | None = None  # DICOM TLS: the CA that signs the destination's certificate
    tls_cert: Path | None = None  # the box's client certificate and key, where asked for
    tls_key: Path | None = None


@dataclass(frozen=True)
class MppsConfig:
    """The site's RIS that takes Modality Performed Procedure Step messages."""

    ae_title: str
    host: str
    port: int


@dataclass(frozen=True)
class SiteConfig:
    id: str
    name: str = ""
    geofence: Geofence | None = None
    networks: tuple[str, ...] = ()
    ssids: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()  # default gateway IP or MAC addresses seen only here
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    destinations: tuple[DestinationConfig, ...] = ()
    worklist: WorklistConfig | None = None
    mpps: MppsConfig | None = None


@dataclass(frozen=True)
class LinksConfig:
    # (interface name, link class) pairs, sorted: overrides the kernel's view of an interface
    classes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Config:
    box: BoxConfig = field(default_factory=BoxConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    transmit: TransmitConfig = field(default_factory=TransmitConfig)
    sites: tuple[SiteConfig, ...] = ()
    source: str = "<embedded default>"
    links: LinksConfig = field(default_factory=LinksConfig)

    def site(self, site_id: str) -> SiteConfig | None:
        return next((s for s in self.sites if s.id == site_id), None)
