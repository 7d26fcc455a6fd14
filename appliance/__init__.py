"""Flux Box appliance: receive, store encrypted, validate, route and deliver DICOM studies."""

from importlib import metadata

try:  # the version lives in pyproject.toml alone
    __version__ = metadata.version("fluxbox")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
