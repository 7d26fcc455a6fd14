"""Which TLS settings are complete: a half-configured one is refused by `check-config`,
never taken to mean clear text.

The box's port (server): `tls_cert` and `tls_key` together make it a TLS port; `tls_ca`
then also requires modalities to present a certificate it signed. A destination (client):
`tls_ca` makes the association TLS and checks the PACS's certificate; `tls_cert` and
`tls_key` together add the box's client certificate.
"""

from __future__ import annotations

from pathlib import Path

Problems = list[tuple[str, str]]  # (key, message)


def _pair(cert: Path | None, key: Path | None) -> Problems:
    if key is not None and cert is None:
        return [("tls_key", "is set without tls_cert; add tls_cert, the certificate of this key")]
    if cert is not None and key is None:
        return [("tls_cert", "is set without tls_key; add tls_key, the certificate's private "
                             "key (the same file if it holds both)")]
    return []


def tls_server_problems(cert: Path | None, key: Path | None, ca: Path | None) -> Problems:
    """The box's own port."""
    problems = _pair(cert, key)
    if ca is not None and cert is None:
        problems.append(("tls_ca", "is set without tls_cert and tls_key: the port would be plain "
                                   "DICOM and no modality certificate checked; add tls_cert "
                                   "and tls_key, or remove tls_ca"))
    return problems


def tls_client_problems(cert: Path | None, key: Path | None, ca: Path | None) -> Problems:
    """One destination."""
    problems = _pair(cert, key)
    if ca is None and (cert is not None or key is not None):
        problems.append(("tls_ca", "is missing while tls_cert/tls_key are set: without it the "
                                   "destination is sent in clear; set tls_ca to the CA that "
                                   "signs the PACS's certificate"))
    return problems
