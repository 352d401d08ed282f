"""Unit tests for middleware.list_sync.verify_list: a signed permitted-query list verified
once per process and pinned certificate, never a forged or a differently pinned one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from codes.errors import RenkeiError
from crypto.pki import PkiLayout, load_certificate
from crypto.xmlsig import PinnedVerifier, Signer
from middleware import messages
from middleware.hardened_xml import serialize
from middleware.list_sync import VERIFIED_KEPT, verify_list
from tests.network import MEGURO, SETAGAYA

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)


def signed_list(signer: Signer, version: int) -> bytes:
    """A list of two municipalities, version ``version``, signed by ``signer``."""
    document = messages.PermittedListDocument(
        version=version,
        issued_at=ISSUED,
        expires_at=ISSUED + timedelta(days=1),
        institutions=tuple(
            messages.InstitutionEntry(code=code, name=name, kind="municipality")
            for code, name in ((MEGURO, "目黒区"), (SETAGAYA, "世田谷区"))
        ),
        rows=(),
        delegations=(),
    )
    return serialize(signer.sign(messages.to_element(document)))


def hub_verifier(pki: Path) -> PinnedVerifier:
    return PinnedVerifier(load_certificate(PkiLayout(pki).hub_signing().certificate))


def test_nodes_pinned_to_the_hub_share_one_verified_list(network_pki: Path) -> None:
    """Two nodes' verifiers of the hub's certificate get the same list object for the same
    document: it is verified once, and holds what the hub signed."""
    document = signed_list(Signer(PkiLayout(network_pki).hub_signing().load()), 1)
    first = verify_list(document, hub_verifier(network_pki))
    assert verify_list(document, hub_verifier(network_pki)) is first
    assert first.version == 1
    assert sorted(first.institutions) == sorted((MEGURO, SETAGAYA))


def test_a_list_signed_by_another_key_is_refused_every_time(network_pki: Path) -> None:
    """A list signed by Meguro's key is refused against the hub's certificate, again and
    again (a refusal is never kept), and a list verified against the hub's certificate is
    still refused to a verifier pinned to another one."""
    layout = PkiLayout(network_pki)
    forged = signed_list(Signer(layout.institution_signing(MEGURO).load()), 2)
    for _ in range(2):
        with pytest.raises(RenkeiError) as refused:
            verify_list(forged, hub_verifier(network_pki))
        assert refused.value.code == "PermittedListSignatureInvalid"
    genuine = signed_list(Signer(layout.hub_signing().load()), 3)
    verify_list(genuine, hub_verifier(network_pki))
    pinned_elsewhere = PinnedVerifier(
        load_certificate(layout.institution_signing(MEGURO).certificate)
    )
    with pytest.raises(RenkeiError):
        verify_list(genuine, pinned_elsewhere)


def test_only_the_newest_lists_are_kept_verified(network_pki: Path) -> None:
    """After more than VERIFIED_KEPT other versions, the first one is verified again (a new
    object, equal in content)."""
    signer = Signer(PkiLayout(network_pki).hub_signing().load())
    first_document = signed_list(signer, 10)
    first = verify_list(first_document, hub_verifier(network_pki))
    for version in range(11, 11 + VERIFIED_KEPT):
        verify_list(signed_list(signer, version), hub_verifier(network_pki))
    again = verify_list(first_document, hub_verifier(network_pki))
    assert again is not first
    assert again.version == first.version
