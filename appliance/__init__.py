"""Flux Box appliance: receive, store encrypted, validate, route and deliver DICOM studies."""

__version__ = "0.1.0"
