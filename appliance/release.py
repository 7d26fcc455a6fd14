"""What the box runs: the appliance's version and, on the firmware image, the image's.

The image names itself in os-release (`IMAGE_ID=fluxbox`, `IMAGE_VERSION=...`, written by
image/hooks/customize.sh); service staff read both in `fluxbox status`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from appliance import __version__

OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
IMAGE_ID = "fluxbox"


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines as os-release(5) writes them (shell quoting, # comments)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            continue
        fields[key] = words[0] if words else ""
    return fields


def firmware_version(paths: tuple[Path, ...] = OS_RELEASE) -> str | None:
    """The firmware image's version; None when the appliance runs outside the image."""
    for path in paths:
        try:
            fields = parse_os_release(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
        return fields.get("IMAGE_VERSION") if fields.get("IMAGE_ID") == IMAGE_ID else None
    return None


def versions(paths: tuple[Path, ...] = OS_RELEASE) -> dict[str, str | None]:
    return {"appliance": __version__, "firmware": firmware_version(paths)}
