"""Outside members and revocation (crypto/pki.py, crypto/tls.py): `renkei pki enrol` issues
an outside member's certificates from the network CA, the hub lists it, `renkei pki revoke`
withdraws certificates and every listener refuses them at the next handshake."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.web.client import ResponseNeverReceived

from crypto.pki import (
    DOCUMENT_VALIDITY,
    TLS_VALIDITY,
    CredentialPaths,
    InstitutionEntry,
    PkiLayout,
    enrol_member,
    init_pki,
    load_certificate,
    revoke,
)
from crypto.tls import ClientTLSPolicy, RevocationList
from middleware.config import load_config
from simulators.back_office import BackOfficeClient
from tests.network import CARE_INSURANCE, MEGURO, write_config
from tests.test_box_process import run

NERIMA = "1131202000000000"
OUTSIDE = f"""
[institution:nerima]
code = {NERIMA}
name = 練馬区
kind = municipality
external = true
network_address = https://127.0.0.1:7999
provides = TM00000000000002
"""


def _pki(tmp_path: Path) -> PkiLayout:
    init_pki(tmp_path / "pki", [InstitutionEntry(MEGURO, (CARE_INSURANCE,))])
    return PkiLayout(tmp_path / "pki")


def test_certificates_live_as_long_as_real_ones(tmp_path: Path) -> None:
    """TLS and back-office client certificates 397 days, signing and encryption 2 years."""
    layout = _pki(tmp_path)
    for paths, validity in (
        (layout.institution_tls(MEGURO), TLS_VALIDITY),
        (layout.back_office_client(MEGURO, CARE_INSURANCE), TLS_VALIDITY),
        (layout.institution_signing(MEGURO), DOCUMENT_VALIDITY),
        (layout.institution_encryption(MEGURO), DOCUMENT_VALIDITY),
    ):
        certificate = load_certificate(paths.certificate)
        lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
        assert lifetime == validity + datetime.timedelta(hours=1), paths.certificate


def test_an_outside_member_gets_its_keys_and_certificates_in_a_folder(tmp_path: Path) -> None:
    """Without CSRs: keys made and handed over with the certificates, the network CA, the
    hub's signing certificate and member.json; the PKI keeps the certificates."""
    layout = _pki(tmp_path)
    out = tmp_path / "for-nerima"
    written = enrol_member(layout.directory, NERIMA, out, {"code": NERIMA})
    assert {path.name for path in written} == {
        *(f"{use}.{kind}" for use in ("tls", "signing", "encryption") for kind in ("pem", "key")),
        "ca.pem",
        "hub-signing.pem",
        "member.json",
    }
    ca = load_certificate(layout.ca().certificate)
    tls = load_certificate(out / "tls.pem")
    tls.verify_directly_issued_by(ca)
    assert tls.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NERIMA
    assert layout.institution_encryption(NERIMA).certificate.exists()
    assert json.loads((out / "member.json").read_text())["code"] == NERIMA
    with pytest.raises(FileExistsError):  # nothing is overwritten
        enrol_member(layout.directory, NERIMA, out, {"code": NERIMA})


def _request(key: Any, path: Path) -> None:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anything")]))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(request.public_bytes(serialization.Encoding.PEM))


def test_an_outside_member_keeps_its_keys_when_it_sends_requests(tmp_path: Path) -> None:
    """From CSRs: certificates for the member's own keys (the subject is the network's, not
    the request's); no key is written anywhere; a request with the wrong kind of key is
    refused and nothing is issued."""
    layout = _pki(tmp_path)
    requests = tmp_path / "csr"
    requests.mkdir()
    keys: dict[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = {
        "tls": ec.generate_private_key(ec.SECP256R1()),
        "signing": ec.generate_private_key(ec.SECP256R1()),
        "encryption": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }
    _request(keys["encryption"], requests / "tls.csr")  # an RSA key for TLS: refused
    with pytest.raises(ValueError, match="EC P-256"):
        enrol_member(layout.directory, NERIMA, tmp_path / "refused", {}, requests)
    assert not layout.institution_tls(NERIMA).certificate.exists()
    for use, key in keys.items():
        _request(key, requests / f"{use}.csr")
    out = tmp_path / "for-nerima"
    written = enrol_member(layout.directory, NERIMA, out, {"code": NERIMA}, requests)
    assert not [path for path in written if path.suffix == ".key"]
    assert not layout.institution_tls(NERIMA).key.exists()
    for use, key in keys.items():
        certificate = load_certificate(out / f"{use}.pem")
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        assert certificate.public_key().public_bytes(
            serialization.Encoding.DER, spki
        ) == key.public_key().public_bytes(serialization.Encoding.DER, spki)
        assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == NERIMA


def test_revocation_lists_the_certificates_and_the_list_is_reread(tmp_path: Path) -> None:
    """`revoke` puts an institution's certificates on the network CA's list (a back-office
    system's on its node's list) and moves them aside; a RevocationList sees each change
    of the file without being made again; a list not signed by its CA is ignored."""
    layout = _pki(tmp_path)
    ca = load_certificate(layout.ca().certificate)
    tls = load_certificate(layout.institution_tls(MEGURO).certificate)
    checker = RevocationList([(layout.crl(), ca)])
    assert not checker.revoked(tls)
    withdrawn = revoke(layout.directory, MEGURO)
    assert withdrawn[0].serial_number == tls.serial_number
    assert checker.revoked(tls)
    assert not layout.institution_tls(MEGURO).certificate.exists()
    init_pki(layout.directory, [InstitutionEntry(MEGURO, (CARE_INSURANCE,))])  # re-issued
    assert not checker.revoked(load_certificate(layout.institution_tls(MEGURO).certificate))

    client = load_certificate(layout.back_office_client(MEGURO, CARE_INSURANCE).certificate)
    local_ca = load_certificate(layout.back_office_ca(MEGURO).certificate)
    local = RevocationList([(layout.back_office_crl(MEGURO), local_ca)])
    revoke(layout.directory, MEGURO, CARE_INSURANCE)
    assert local.revoked(client)
    assert not RevocationList([(layout.back_office_crl(MEGURO), ca)]).revoked(client)


@pytest_twisted.async_yield_fixture
async def own_box(tmp_path: Path) -> Any:
    """A box over mutual TLS with a PKI of its own (the session's PKI is shared by every
    test: nothing may be revoked in it)."""
    from tests.conftest import running_box
    from tests.network import make_network_pki

    running = await running_box(
        write_config(tmp_path, make_network_pki(tmp_path / "pki")), in_memory=False
    )
    try:
        yield running
    finally:
        await running.stopService()


@pytest_twisted.ensureDeferred
async def test_a_revoked_back_office_system_is_refused_at_the_handshake(own_box: Any) -> None:
    """`renkei pki revoke meguro --system care-insurance` while the node runs: the next
    connection with that certificate fails the TLS handshake, no restart needed."""
    tls_box = own_box
    config = tls_box.config
    institution = config.institution("meguro")
    before = BackOfficeClient(tls_box.reactor, config, institution, CARE_INSURANCE)
    try:
        await before.request("GET", "/openapi.json")  # connects
    finally:
        await before.close()
    revoked = run("renkei", "pki", "revoke", "meguro", "--system", CARE_INSURANCE,
                  "-c", str(config.path))  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked CN=care-insurance" in revoked.stdout
    # Someone kept the withdrawn certificate and its key (they were moved aside).
    revoked_folder = PkiLayout(config.pki).revoked_directory(MEGURO)
    (kept,) = revoked_folder.glob("*.pem")
    policy = ClientTLSPolicy(
        [load_certificate(PkiLayout(config.pki).ca().certificate)],
        CredentialPaths(kept, kept.with_suffix(".key")).load(),
    )
    after = BackOfficeClient(tls_box.reactor, config, institution, CARE_INSURANCE, policy=policy)
    try:
        with pytest.raises(ResponseNeverReceived) as refused:
            await after.request("GET", "/openapi.json")
        assert "alert" in repr(refused.value.reasons), refused.value.reasons
    finally:
        await after.close()


@pytest_twisted.ensureDeferred
async def test_the_hub_lists_an_enrolled_outside_member_and_the_box_runs_no_node_for_it(
    tmp_path: Path,
) -> None:
    """A configuration with `external = true`: the member is no party of the box, `pki
    init` says it is not enrolled, `pki enrol` writes its folder; the hub then lists it in
    the permitted-query list that our nodes hold."""
    from renkei.supervisor import parties_of
    from tests.conftest import running_box

    config = write_config(tmp_path, tmp_path / "pki")
    config.path.write_text(config.path.read_text() + OUTSIDE)
    config = load_config(config.path)
    assert [m.name for m in config.outside_members] == ["nerima"]
    assert "nerima" not in parties_of(config)
    made = run("renkei", "pki", "init", str(config.pki), "-c", str(config.path))
    assert "nerima (練馬区) is not enrolled yet" in made.stdout
    enrolled = run("renkei", "pki", "enrol", "nerima", "--out", str(tmp_path / "nerima"),
                   "-c", str(config.path))  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    about = json.loads((tmp_path / "nerima" / "member.json").read_text())
    assert about["server_name"] == f"i{NERIMA}.renkei.test"
    assert about["hub_address"] == config.hub_address
    refused = run("renkei", "pki", "enrol", "meguro", "--out", str(tmp_path / "x"),
                  "-c", str(config.path))  # fmt: skip
    assert refused.returncode == 1 and "not an outside member" in refused.stderr
    box = await running_box(config, in_memory=True)
    try:
        assert set(box.nodes) == {"meguro", "setagaya"}
        listed = box.nodes["meguro"].lists.current.institutions
        assert listed[NERIMA].name == "練馬区" and listed[NERIMA].kind == "municipality"
    finally:
        await box.stopService()
