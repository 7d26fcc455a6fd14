"""The TOML config: what it holds and how it is read.

- ``model``: the config as frozen dataclasses, the TOML keys of PRODUCT.md.
- ``loading``: where it comes from, parsing it.
- ``checks``: each table's keys and values checked; every problem names file, line, key
  and fix (``problems``), with the line found by ``scanner``.
- ``values``: the checks of one value (AE titles, ports, windows, ...); ``tls``: TLS
  settings that go together.
"""

from appliance.config.loading import (
    DEFAULT_SOURCE,
    ENV_VAR,
    SYSTEM_CONFIG,
    default_config,
    load_config,
    parse_config,
    resolve_config,
)
from appliance.config.model import (
    BoxConfig,
    Config,
    DestinationConfig,
    DetectConfig,
    Geofence,
    LinksConfig,
    ModalityConfig,
    MppsConfig,
    PolicyConfig,
    SiteConfig,
    TransmitConfig,
)
from appliance.config.problems import ConfigError, ConfigProblem
from appliance.signals import LINK_CLASSES
from appliance.worklist.config import CodeMapping, CorrectionsConfig, WorklistConfig

__all__ = [
    "DEFAULT_SOURCE",
    "ENV_VAR",
    "LINK_CLASSES",
    "SYSTEM_CONFIG",
    "BoxConfig",
    "CodeMapping",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "CorrectionsConfig",
    "DestinationConfig",
    "DetectConfig",
    "Geofence",
    "LinksConfig",
    "ModalityConfig",
    "MppsConfig",
    "PolicyConfig",
    "SiteConfig",
    "TransmitConfig",
    "WorklistConfig",
    "default_config",
    "load_config",
    "parse_config",
    "resolve_config",
]
