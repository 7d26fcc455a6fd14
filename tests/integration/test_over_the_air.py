"""Over the air: throttle, stalls, TLS and time-to-live, against real peers on loopback."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import pydicom
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

from appliance.demo.relay import FlakyRelay
from appliance.demo.synthetic import write_ct_study, write_multiframe
from tests.integration.conftest import dest
from tests.peers import CountingSCP, free_port, storescu


def test_throttle_holds_its_cap(make_box, tmp_path):
    files = write_ct_study(tmp_path / "ct", slices=24, rows=256, cols=256, seed=5)
    arrivals: list[float] = []
    sizes = {p: p.stat().st_size for p in files}

    def stamp(ds):
        arrivals.append(time.monotonic())
        return None

    cap_kbps = 4000  # 500 kB/s: the study takes about 6 s
    with CountingSCP(ae_title="PACS", status_override=stamp) as scp:
        box = make_box([dest("pacs", "PACS", scp.port)],
                       transmit=f"max_kbps = {cap_kbps}\nmax_kbps_cellular = 1000")
        with box:
            storescu("127.0.0.1", box.port, files, called_aet="FLUXBOX")
            box.wait_states("complete", timeout_s=60)
    # bytes that arrived between the first and the last arrival, over that time
    paced = sum(sorted(sizes.values())[1:])
    rate_bps = paced * 8 / (arrivals[-1] - arrivals[0])
    assert 0.9 * cap_kbps * 1000 <= rate_bps <= 1.1 * cap_kbps * 1000, rate_bps
    assert len(scp.uids()) == len(files)


def test_a_stalled_link_is_detected_and_the_association_restarted(make_box, tmp_path):
    big = write_multiframe(tmp_path / "big.dcm", size_bytes=40 * 1024 * 1024, rows=512,
                           cols=512)
    with CountingSCP(ae_title="PACS") as scp, FlakyRelay(("127.0.0.1", scp.port)) as relay:
        box = make_box([dest("pacs", "PACS", relay.port)],
                       transmit="stall_s = 2\nmax_kbps = 80000")
        with box:
            storescu("127.0.0.1", box.port, [big], called_aet="FLUXBOX")
            box.wait_for(lambda: relay.bytes_up > 4 * 1024 * 1024, 60, "delivery under way")
            relay.freeze(True)
            box.wait_for(lambda: any("no progress" in (d["last_error"] or "")
                                     for d in box.status()["destinations"]),
                         30, "the stall to be detected")
            relay.freeze(False)
            box.wait_states("complete", timeout_s=120)
        assert scp.uids() == {pydicom.dcmread(big, stop_before_pixels=True).SOPInstanceUID}


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_pki(folder: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it."""
    folder.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             f"/CN={name} CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=folder)
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem",
             cwd=folder)
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


class TlsPacs:
    """A pynetdicom storage SCP that speaks DICOM TLS."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.received: list[str] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        ae = AE(ae_title="TLS_PACS")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.port = free_port()
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0

    def stop(self) -> None:
        self.server.shutdown()


def test_tls_destination_with_a_certificate_that_does_not_verify_is_refused(
        make_box, tmp_path, ct_study):
    ca, cert, key = _make_pki(tmp_path / "hospital", "Hospital")
    other_ca, _, _ = _make_pki(tmp_path / "other", "Other")
    pacs = TlsPacs(cert, key)
    try:
        wrong = make_box([dest("pacs", "TLS_PACS", pacs.port, tls_ca=str(other_ca))],
                         name="wrong")
        with wrong:
            storescu("127.0.0.1", wrong.port, ct_study[:2], called_aet="FLUXBOX")
            errors = wrong.wait_for(
                lambda: [d["last_error"] for d in wrong.status()["destinations"]
                         if d["last_error"]], 30, "a TLS error")
            assert "does not verify" in errors[0]
            assert pacs.received == []

        right = make_box([dest("pacs", "TLS_PACS", pacs.port, tls_ca=str(ca))], name="right")
        with right:
            storescu("127.0.0.1", right.port, ct_study[:2], called_aet="FLUXBOX")
            right.wait_states("complete", timeout_s=60)
        assert len(pacs.received) == 2
    finally:
        pacs.stop()


def test_a_study_waiting_past_its_time_to_live_needs_attention_and_keeps_trying(
        make_box, ct_study):
    box = make_box([dest("pacs", "PACS", free_port())], transmit="ttl_h = 0.0005")  # 1.8 s
    with box:
        storescu("127.0.0.1", box.port, ct_study[:2], called_aet="FLUXBOX")
        status = box.wait_for(lambda: (s := box.status())["health"] == "attention" and s,
                              30, "attention")
        assert any("waiting longer" in e for e in status["errors"])
        (row,) = box.studies()
        assert row["overdue"] and row["state"] in ("queued", "sending")


class PickyPacs:
    """A storage SCP that accepts only the transfer syntaxes it is given; keeps datasets."""

    def __init__(self, syntaxes: list[str]) -> None:
        self.received: dict[str, tuple[str, bytes]] = {}
        ae = AE(ae_title="PICKY")
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, syntaxes)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._store)])

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress(generate_instance_uid=False)
        self.received[str(ds.SOPInstanceUID)] = (str(event.context.transfer_syntax),
                                                 ds.PixelData)
        return 0

    def stop(self) -> None:
        self.server.shutdown()


def _pixels(files) -> dict[str, bytes]:
    return {(ds := pydicom.dcmread(p)).SOPInstanceUID: ds.PixelData for p in files}


def test_compression_on_the_wire_is_lossless_and_a_pacs_refusing_it_gets_the_study_as_stored(
        make_box, ct_study):
    from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

    syntaxes = '["JPEGLSLossless", "RLELossless"]'
    cases = (([JPEGLSLossless, ExplicitVRLittleEndian], JPEGLSLossless),
             ([RLELossless, ExplicitVRLittleEndian], RLELossless),
             ([ExplicitVRLittleEndian], ExplicitVRLittleEndian))
    for n, (accepts, expected) in enumerate(cases):
        pacs = PickyPacs([str(ts) for ts in accepts])
        try:
            box = make_box([{**dest("pacs", "PICKY", pacs.port)}], name=f"b{n}",
                           transmit="")
            box.config_path.write_text(box.config_path.read_text().replace(
                'port = ' + str(pacs.port), f'port = {pacs.port}\ntransfer_syntaxes = {syntaxes}'))
            with box:
                storescu("127.0.0.1", box.port, ct_study, called_aet="FLUXBOX")
                box.wait_states("complete", timeout_s=60)
            assert {ts for ts, _ in pacs.received.values()} == {str(expected)}
            received = {uid: px for uid, (_, px) in pacs.received.items()}
            sent = _pixels(ct_study)
            assert received.keys() == sent.keys()
            for uid in sent:
                assert len(received[uid]) == len(sent[uid]), (expected, uid)
                assert received[uid] == sent[uid], (expected, uid)
        finally:
            pacs.stop()


def test_tls_on_the_box_own_port(make_box, tmp_path, ct_study):
    ca, cert, key = _make_pki(tmp_path / "box-pki", "Box")
    with CountingSCP(ae_title="PACS") as scp:
        box = make_box([dest("pacs", "PACS", scp.port)],
                       box=f'tls_cert = "{cert}"\ntls_key = "{key}"')
        with box:
            plain = storescu("127.0.0.1", box.port, ct_study[:1], called_aet="FLUXBOX")
            assert plain.returncode != 0, "a plain connection is not served"
            ae = AE(ae_title="CT1")
            ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
            assoc = ae.associate("127.0.0.1", box.port, ae_title="FLUXBOX",
                                 tls_args=(context, "127.0.0.1"))
            assert assoc.is_established
            assert assoc.send_c_store(ct_study[0]).Status == 0
            assoc.release()
            box.wait_states("complete", timeout_s=60)
        assert len(scp.uids()) == 1
