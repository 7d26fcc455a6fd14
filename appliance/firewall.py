"""The firewall rules that open the box's ports where its config says it listens.

The image's `/etc/nftables.conf` drops every incoming connection except loopback, and
jumps to the chain `inet fluxbox services`, empty until `fluxbox firewall` fills it from
the config (`fluxbox-firewall.service`, as root, before the appliance starts):

- the DICOM port (`box.port`) from each interface of `box.listen`; to each address of
  `box.listen` only on the interface that holds it (`fib daddr . iif type local`: a host
  on the hospital Wi-Fi routing to the LAN address through the box gets nothing, although
  Linux would otherwise answer on any interface); from everywhere when `box.listen` is
  empty (every address, as the config says);
- the metrics port the same way from `box.metrics_listen`, nothing more when that is a
  loopback address (loopback is always admitted); the control socket is a Unix socket.

Text only: no I/O here, `nft -f -` applies it. Running it again replaces the chain.
"""

from __future__ import annotations

import ipaddress

from appliance.config import Config
from appliance.listening import is_address

TABLE = "inet fluxbox"
CHAIN = "services"


def _match(target: str) -> str:
    """The nft match admitting connections to `target` (address or interface), or ""
    for every address."""
    if not is_address(target):
        return f'iifname "{target}" '
    ip = ipaddress.ip_address(target)
    if ip.is_unspecified:
        return ""
    family = "ip" if ip.version == 4 else "ip6"
    return f"{family} daddr {ip} fib daddr . iif type local "


def _rules(targets: tuple[str, ...], port: int, service: str) -> list[str]:
    lines = []
    for target in targets or ("0.0.0.0",):
        if is_address(target) and ipaddress.ip_address(target).is_loopback:
            continue  # loopback is admitted by the base ruleset, and only there
        lines.append(f'add rule {TABLE} {CHAIN} {_match(target)}tcp dport {port} accept '
                     f'comment "{service}"')
    return lines


def ruleset(config: Config) -> str:
    """nft commands that make the `services` chain admit exactly what the config listens on."""
    box = config.box
    lines = [
        f"# fluxbox firewall: from {config.source}",
        f"flush chain {TABLE} {CHAIN}",
        *_rules(box.listen, box.port, "dicom"),
    ]
    if box.metrics_listen:
        target, port = box.metrics_listen.rsplit(":", 1)
        lines += _rules((target,), int(port), "metrics")
    return "\n".join(lines) + "\n"
