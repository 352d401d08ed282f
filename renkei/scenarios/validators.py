"""The checks that always hold, whatever a scenario's steps say (docs/scenarios.md, "What
always holds"): every captured message is a schema-valid message of the protocol; every
permit (and permit bundle) the hub sent is signed by the hub; every payload the hub relayed,
alone or in a bundle, opens for its requester alone (the hub's keys fail) and is signed by its
provider; every party's hash chain of provision records verifies."""

from __future__ import annotations

from typing import Any

from codes.errors import RenkeiError
from middleware.config import Config
from middleware.network import (
    HUB,
    PROVISION,
    PROVISION_BUNDLE,
    PROVISION_REQUEST,
    PROVISION_REQUEST_BUNDLE,
)
from middleware.records import verify_records
from middleware.tables import (
    hub_checkpoints,
    hub_record_head,
    hub_records,
    node_checkpoints,
    node_record_head,
    node_records,
)
from renkei.scenarios.targets import read_database
from simulators.capture import MessageLog, check_exchange

__all__ = ["REQUESTER_REFUSALS", "broken_chains", "cryptography_problems", "validated"]


async def validated(reactor: Any, config: Config, log: MessageLog) -> str | None:
    """Why the run fails its always-on checks, or None: every captured message is a
    schema-valid message of the protocol; every permit the hub sent is signed by the hub;
    every payload relayed can be opened by its requester alone (the hub's keys fail) and is
    signed by its provider; every party's hash chain (provision records, audit logs)
    verifies."""
    problems = [problem for exchange in log.exchanges for problem in check_exchange(exchange)]
    problems += cryptography_problems(config, log)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return f"a captured message is not valid: {problems[0]}{more}"
    broken = await broken_chains(reactor, config)
    if broken:
        return "hash chain broken at " + ", ".join(broken)
    return None


# The requester's refusals of a payload it cannot open or trust (docs/protocol.md §5): a
# payload so refused was caught where it must be, and is not a failure of the run.
REQUESTER_REFUSALS = frozenset({"PayloadUnreadable", "PayloadSignatureInvalid", "PayloadInvalid"})


def cryptography_problems(config: Config, log: MessageLog) -> list[str]:
    """What is wrong with the permits and payloads the hub sent (see `validated`): a payload
    the requester refused as unreadable, not signed by its provider or invalid is only
    checked not to open with the hub's keys."""
    from crypto.envelope import open_envelope
    from crypto.pki import PkiLayout, identity_of, load_certificate
    from crypto.xmlsig import CAVerifier, PinnedVerifier, SignatureInvalid
    from middleware import messages

    layout = PkiLayout(config.pki)
    hub_permits = PinnedVerifier(load_certificate(layout.hub_signing().certificate))
    providers = CAVerifier(load_certificate(layout.ca().certificate))
    hub_keys = [layout.hub_tls().load(), layout.hub_signing().load()]
    problems: list[str] = []

    def check_provision(provision: messages.Provision, refusal: str | None, requester: str) -> None:
        number = provision.transaction_number
        if provision.encrypted_payload is None:
            return
        for key in hub_keys:
            try:
                open_envelope(provision.encrypted_payload, key)
            except RenkeiError:
                continue
            problems.append(f"the hub could open the payload of {number}")
        if refusal in REQUESTER_REFUSALS:
            return  # the requester found it wrong itself, and refused it
        keys = layout.institution_encryption(requester).load()
        try:
            plaintext = open_envelope(provision.encrypted_payload, keys)
            element = messages.decode_signed(plaintext, messages.ProvisionPayload)
            _, signer = providers.verify(element)
        except (RenkeiError, SignatureInvalid) as failure:
            problems.append(f"the payload of {number} does not open and verify: {failure}")
            return
        payload = messages.from_element(element, messages.ProvisionPayload)
        if identity_of(signer).common_name != payload.provider:
            problems.append(f"the payload of {number} is not signed by its provider")

    for exchange in log.exchanges:
        if exchange.source != HUB or exchange.request is None:
            continue
        number = exchange.transaction_number
        if exchange.operation == PROVISION_REQUEST:
            asked = messages.decode(exchange.request, messages.ProvisionRequest)
            try:
                hub_permits.verify(asked.permit_element)
            except SignatureInvalid:
                problems.append(f"the permit of {number} is not signed by the hub")
        elif exchange.operation == PROVISION_REQUEST_BUNDLE:
            bundled = messages.decode(exchange.request, messages.ProvisionRequestBundle)
            try:
                hub_permits.verify(bundled.permit_element)
            except SignatureInvalid:
                problems.append(f"the permit bundle {bundled.message_id} is not signed by the hub")
        elif exchange.operation == PROVISION:
            provision = messages.decode(exchange.request, messages.Provision)
            check_provision(provision, exchange.refusal, exchange.destination)
        elif exchange.operation == PROVISION_BUNDLE:
            bundle = messages.decode(exchange.request, messages.ProvisionBundle)
            refused: dict[str, str | None] = {}
            if exchange.answer is not None and exchange.refusal is None:
                answer = messages.decode(exchange.answer, messages.ProvisionBundleAnswer)
                refused = {line.transaction_number: line.code for line in answer.lines}
            for provision in bundle.provisions:
                refusal = refused.get(provision.transaction_number) or exchange.refusal
                check_provision(provision, refusal, exchange.destination)
    return problems


async def broken_chains(reactor: Any, config: Config) -> list[str]:
    """The parties whose hash chain of provision records, and the institutions whose audit
    log, does not verify (``renkei records verify``, ``renkei audit verify``: from the newest
    signed checkpoint once a purge has cut the chain; a stopped party's database is opened
    for the check)."""
    from crypto.pki import PkiLayout, load_certificate
    from middleware.audit import audit_verification
    from middleware.checkpoint import ChainTrust

    assert config.network is not None
    # Without the network's PKI a chain that was never purged still verifies from its
    # genesis (as `renkei records verify` does); a checkpoint then fails to.
    authority = PkiLayout(config.pki).ca().certificate
    ca = load_certificate(authority) if authority.exists() else None
    parties = [(HUB, HUB, config.network.database, hub_records, hub_record_head, hub_checkpoints)]
    parties += [
        (i.name, i.code, i.database, node_records, node_record_head, node_checkpoints)
        for i in config.institutions
    ]
    broken = []
    for name, code, url, records, head, checkpoints in parties:
        trust = None if ca is None else ChainTrust(ca, code)
        verified = await read_database(
            reactor, url, verify_records, records, head, checkpoints, trust
        )
        if not verified.intact:
            broken.append(name)
    for institution in config.institutions:
        trust = None if ca is None else ChainTrust(ca, institution.code)
        verified = await read_database(reactor, institution.database, audit_verification, trust)
        if not verified.intact:
            broken.append(f"{institution.name} (audit log)")
    return broken
