"""Tests for crypto.pki: the on-disk test network PKI."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.pki import (
    CredentialPaths,
    Credentials,
    InstitutionEntry,
    IssuedCertificates,
    PeerIdentity,
    PkiLayout,
    identity_of,
    init_pki,
    load_certificate,
    load_private_key,
    load_secret_key,
    server_name_of_hub,
    server_name_of_institution,
)
from tests.certs import BACK_OFFICE_SYSTEM, INSTITUTION, INSTITUTIONS, OTHER_INSTITUTION, make_pki


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _pairs(layout: PkiLayout) -> list[CredentialPaths]:
    pairs = [layout.ca(), layout.hub_tls(), layout.hub_signing()]
    for entry in INSTITUTIONS:
        pairs += [
            layout.institution_tls(entry.code),
            layout.institution_signing(entry.code),
            layout.institution_encryption(entry.code),
            layout.back_office_ca(entry.code),
        ]
        pairs += [layout.back_office_client(entry.code, s) for s in entry.back_office_systems]
    return pairs


def _snapshot(directory: Path) -> dict[Path, tuple[bytes, int]]:
    return {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(kind).value


def test_init_pki_creates_every_file_of_the_layout_with_mode_0600(layout: PkiLayout) -> None:
    """init_pki writes each certificate, key and secret the layout names, readable only by us."""
    files = [p for pair in _pairs(layout) for p in (pair.certificate, pair.key)]
    files += [layout.hub_fugo_key(), layout.hub_idcode_key()]
    for path in files:
        assert path.is_file(), path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert layout.institution_tls(INSTITUTION).certificate == (
        layout.directory / "institutions" / INSTITUTION / "tls.pem"
    )
    assert layout.back_office_client(INSTITUTION, BACK_OFFICE_SYSTEM).key == (
        layout.directory / "institutions" / INSTITUTION / "back-office" / "juki.key"
    )
    assert not list(layout.directory.rglob(".*")), "temporary files were left behind"


def test_init_pki_second_run_changes_no_file(layout: PkiLayout) -> None:
    """Running init_pki again with the same institutions leaves every file untouched."""
    before = _snapshot(layout.directory)
    init_pki(layout.directory, INSTITUTIONS)
    assert _snapshot(layout.directory) == before


def test_init_pki_adds_a_new_institution_without_touching_existing_files(
    tmp_path: Path,
) -> None:
    """Re-running with an added institution or system creates only the new files."""
    make_pki(tmp_path)
    before = _snapshot(tmp_path)
    added = (
        InstitutionEntry(INSTITUTION, (BACK_OFFICE_SYSTEM, "zeimu", "fukushi")),
        InstitutionEntry(OTHER_INSTITUTION, ()),
        InstitutionEntry("3131105000000000", ("kokuho",)),
    )
    init_pki(tmp_path, added)
    after = _snapshot(tmp_path)
    assert {p: after[p] for p in before} == before
    layout = PkiLayout(tmp_path)
    new = set(after) - set(before)
    assert layout.back_office_client(INSTITUTION, "fukushi").certificate in new
    assert layout.institution_tls("3131105000000000").certificate in new
    ca = load_certificate(layout.ca().certificate)
    new_tls = load_certificate(layout.institution_tls("3131105000000000").certificate)
    assert new_tls.issuer == ca.subject
    new_tls.verify_directly_issued_by(ca)


def test_init_pki_reissues_a_missing_certificate_for_its_existing_key(tmp_path: Path) -> None:
    """A certificate file deleted by hand is re-issued for the key that is still there."""
    layout = make_pki(tmp_path)
    paths = layout.institution_signing(INSTITUTION)
    key_before = paths.key.read_bytes()
    paths.certificate.unlink()
    init_pki(tmp_path, INSTITUTIONS)
    assert paths.key.read_bytes() == key_before
    Credentials.load(paths.certificate, paths.key)  # key and certificate match


def test_init_pki_refuses_a_certificate_whose_key_is_missing(tmp_path: Path) -> None:
    """A certificate without its key is an error, since repairing it would overwrite."""
    layout = make_pki(tmp_path)
    layout.hub_tls().key.unlink()
    with pytest.raises(FileNotFoundError):
        init_pki(tmp_path, INSTITUTIONS)


@pytest.mark.parametrize("code", ["../evil", "", "a/b", "-1", "1.2"])
def test_init_pki_refuses_codes_unusable_as_directory_and_dns_label(
    tmp_path: Path, code: str
) -> None:
    """Institution codes must be plain DNS labels so they cannot escape the directory."""
    with pytest.raises(ValueError):
        init_pki(tmp_path, [InstitutionEntry(code, ())])
    assert not tmp_path.joinpath("ca.pem").exists()


def test_init_pki_refuses_back_office_system_names_with_path_characters(tmp_path: Path) -> None:
    """Back-office system names become file names and may not contain path separators."""
    with pytest.raises(ValueError):
        init_pki(tmp_path, [InstitutionEntry(INSTITUTION, ("../../ca",))])


def test_certificate_identities_carry_the_expected_cn_ou_and_o(layout: PkiLayout) -> None:
    """Each certificate names its holder in CN, its purpose in OU, and back offices' O."""

    def identity(paths: CredentialPaths) -> PeerIdentity:
        return identity_of(load_certificate(paths.certificate))

    assert identity(layout.hub_tls()) == PeerIdentity("hub", "tls", None)
    assert identity(layout.hub_signing()) == PeerIdentity("hub", "signing", None)
    assert identity(layout.institution_tls(INSTITUTION)) == PeerIdentity(INSTITUTION, "tls", None)
    assert identity(layout.institution_signing(INSTITUTION)) == PeerIdentity(
        INSTITUTION, "signing", None
    )
    assert identity(layout.institution_encryption(OTHER_INSTITUTION)) == PeerIdentity(
        OTHER_INSTITUTION, "encryption", None
    )
    assert identity(layout.back_office_ca(INSTITUTION)).common_name == (
        f"{INSTITUTION} back office CA"
    )
    assert identity(layout.back_office_client(INSTITUTION, BACK_OFFICE_SYSTEM)) == PeerIdentity(
        BACK_OFFICE_SYSTEM, "back-office", INSTITUTION
    )


def test_tls_certificates_name_their_server_and_allow_both_tls_roles(layout: PkiLayout) -> None:
    """TLS certificates carry the server DNS name, localhost and 127.0.0.1, server+client EKU."""
    cases = [
        (layout.hub_tls(), server_name_of_hub()),
        (layout.institution_tls(INSTITUTION), f"i{INSTITUTION}.renkei.test"),
    ]
    assert server_name_of_hub() == "hub.renkei.test"
    assert server_name_of_institution(INSTITUTION) == f"i{INSTITUTION}.renkei.test"
    for paths, server_name in cases:
        cert = load_certificate(paths.certificate)
        san = _extension(cert, x509.SubjectAlternativeName)
        assert isinstance(san, x509.SubjectAlternativeName)
        assert san.get_values_for_type(x509.DNSName) == [server_name, "localhost"]
        assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        eku = _extension(cert, x509.ExtendedKeyUsage)
        assert isinstance(eku, x509.ExtendedKeyUsage)
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}


def test_key_types_and_key_usages_match_each_purpose(layout: PkiLayout) -> None:
    """Encryption keys are RSA 2048 for key transport; everything else is EC P-256."""
    encryption = layout.institution_encryption(INSTITUTION).load()
    assert isinstance(encryption.private_key, rsa.RSAPrivateKey)
    assert encryption.private_key.key_size == 2048
    usage = _extension(encryption.certificate, x509.KeyUsage)
    assert isinstance(usage, x509.KeyUsage)
    assert usage.key_encipherment and usage.data_encipherment and not usage.digital_signature

    signing = layout.institution_signing(INSTITUTION).load()
    assert isinstance(signing.private_key, ec.EllipticCurvePrivateKey)
    assert isinstance(signing.private_key.curve, ec.SECP256R1)
    usage = _extension(signing.certificate, x509.KeyUsage)
    assert isinstance(usage, x509.KeyUsage)
    assert usage.digital_signature and usage.content_commitment

    client = load_certificate(
        layout.back_office_client(INSTITUTION, BACK_OFFICE_SYSTEM).certificate
    )
    client_eku = _extension(client, x509.ExtendedKeyUsage)
    assert isinstance(client_eku, x509.ExtendedKeyUsage)
    assert list(client_eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_cas_are_self_signed_and_issue_the_certificates_below_them(layout: PkiLayout) -> None:
    """The network CA issues network certificates; each back-office CA its own clients."""
    ca = load_certificate(layout.ca().certificate)
    constraints = _extension(ca, x509.BasicConstraints)
    assert isinstance(constraints, x509.BasicConstraints) and constraints.ca
    ca.verify_directly_issued_by(ca)
    for paths in (layout.hub_tls(), layout.institution_signing(OTHER_INSTITUTION)):
        cert = load_certificate(paths.certificate)
        cert.verify_directly_issued_by(ca)
        aki = _extension(cert, x509.AuthorityKeyIdentifier)
        ski = _extension(ca, x509.SubjectKeyIdentifier)
        assert isinstance(aki, x509.AuthorityKeyIdentifier)
        assert isinstance(ski, x509.SubjectKeyIdentifier)
        assert aki.key_identifier == ski.digest
    local_ca = load_certificate(layout.back_office_ca(INSTITUTION).certificate)
    client = load_certificate(
        layout.back_office_client(INSTITUTION, BACK_OFFICE_SYSTEM).certificate
    )
    client.verify_directly_issued_by(local_ca)
    assert client.issuer != ca.subject


def test_hub_secret_keys_are_32_distinct_random_bytes(layout: PkiLayout) -> None:
    """fugo.key and idcode.key each hold 32 raw bytes, and not the same ones."""
    fugo = load_secret_key(layout.hub_fugo_key())
    idcode = load_secret_key(layout.hub_idcode_key())
    assert len(fugo) == len(idcode) == 32
    assert fugo != idcode


def test_credentials_load_refuses_a_key_that_does_not_match_the_certificate(
    layout: PkiLayout,
) -> None:
    """Loading a certificate with another certificate's key fails at load time."""
    with pytest.raises(ValueError):
        Credentials.load(layout.hub_tls().certificate, layout.hub_signing().key)
    key = load_private_key(layout.hub_signing().key)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


def _der(paths: CredentialPaths) -> bytes:
    return load_certificate(paths.certificate).public_bytes(Encoding.DER)


def test_issued_certificates_give_each_certificate_its_own_identity(layout: PkiLayout) -> None:
    """A certificate checked once is never handed out for other bytes: each peer's
    certificate, asked for in turn and again, comes back with its own names."""
    issued = IssuedCertificates(load_certificate(layout.ca().certificate))
    mine = _der(layout.institution_encryption(INSTITUTION))
    other = _der(layout.institution_encryption(OTHER_INSTITUTION))
    for der in (mine, other, mine, other):
        certificate, identity = issued.check(der)
        assert certificate.public_bytes(Encoding.DER) == der
        assert identity == identity_of(x509.load_der_x509_certificate(der))
    assert issued.check(mine)[1].common_name == INSTITUTION
    assert issued.check(other)[1].common_name == OTHER_INSTITUTION


def test_issued_certificates_refuse_one_not_issued_by_the_ca_every_time(
    layout: PkiLayout,
) -> None:
    """A certificate issued by another CA (a back-office CA's client) is refused, again on a
    second try (failures are not remembered), after a good one was checked."""
    issued = IssuedCertificates(load_certificate(layout.ca().certificate))
    issued.check(_der(layout.institution_encryption(INSTITUTION)))
    stranger = _der(layout.back_office_client(INSTITUTION, BACK_OFFICE_SYSTEM))
    for _ in range(2):
        with pytest.raises((ValueError, InvalidSignature)):
            issued.check(stranger)
    with pytest.raises(ValueError):
        issued.check(b"\x30\x82\x01\x0a" + b"\xff" * 64)


def test_issued_certificates_still_answer_past_their_capacity(layout: PkiLayout) -> None:
    """Past its capacity the remembered certificates are forgotten, not refused: each is
    checked again and given with its own identity."""
    issued = IssuedCertificates(load_certificate(layout.ca().certificate), capacity=1)
    ders = [_der(layout.institution_encryption(entry.code)) for entry in INSTITUTIONS]
    assert len(ders) > 1
    for der in ders + ders:
        assert issued.check(der)[0].public_bytes(Encoding.DER) == der


def test_identity_of_gives_each_certificate_its_own_names_every_time(layout: PkiLayout) -> None:
    """Read in turn and again, two institutions' certificates each give their own CN."""
    mine = load_certificate(layout.institution_signing(INSTITUTION).certificate)
    other = load_certificate(layout.institution_signing(OTHER_INSTITUTION).certificate)
    for _ in range(2):
        assert identity_of(mine).common_name == INSTITUTION
        assert identity_of(other).common_name == OTHER_INSTITUTION
        again = x509.load_der_x509_certificate(_der(layout.institution_signing(INSTITUTION)))
        assert identity_of(again) == identity_of(mine)
