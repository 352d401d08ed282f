"""Microseconds per XML signature and verification of the messages one flow signs.

``.venv/bin/python bench/xmlsig.py`` makes a PKI (Meguro and Setagaya, as bench/flows.py does),
then times, in this process, the four XML-signature operations of one flow with the project's
``crypto.xmlsig``, as the parties call them: the hub signs the permit (`Signer`), the provider
verifies it against the pinned hub signing certificate (`PinnedVerifier`), signs its payload,
and the requester verifies the payload up to the network CA (`CAVerifier`). The messages are
bench/flows.py's (`flow_messages`); each verification gets the signed element parsed from its
serialized bytes, as a party receives it. The same-run baseline is `cryptography`'s bare
ECDSA P-256 / SHA-256 sign and verify of the message's exclusive canonical bytes: the ratio of
an operation to it is the cost of the XML layer around the one public-key operation it needs.

``--against FILE`` loads another version of crypto/xmlsig.py (e.g. ``git show
REV:crypto/xmlsig.py > /tmp/old.py``) beside the current one and times both in the same run,
alternating: the figures of one change, before and after, under the same load.

Timing: CPU time of this process (`time.process_time`), ``--batch`` calls per sample, the
operations (and the two versions) interleaved within each of ``--rounds`` rounds; the figure
is the median sample. Nothing here asserts a timing; docs/performance.md has the figures.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent, _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from flows import (  # noqa: E402  (bench/flows.py: the flow's messages and parties)
    CARE_INSURANCE,
    LOCAL_TAX,
    MEGURO,
    SETAGAYA,
    flow_messages,
    machine,
)
from lxml import etree  # noqa: E402

import crypto.xmlsig  # noqa: E402
from crypto.pki import InstitutionEntry, PkiLayout, init_pki, load_certificate  # noqa: E402
from middleware import messages  # noqa: E402
from middleware.hardened_xml import parse_xml, serialize  # noqa: E402

OPERATIONS = (
    "hub signs the permit",
    "provider verifies the permit (pinned)",
    "provider signs the payload",
    "requester verifies the payload (CA)",
)
BASELINES = (
    "ECDSA sign of the permit's bytes",
    "ECDSA verify of the permit's bytes",
    "ECDSA sign of the payload's bytes",
    "ECDSA verify of the payload's bytes",
)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/xmlsig.py",
        description=(
            "Time the XML signatures and verifications of one flow (permit and provision "
            "payload) with crypto.xmlsig, against bare ECDSA on the same bytes, in µs per call."
        ),
    )
    parser.add_argument("--rounds", type=int, default=30, help="samples per figure (30)")
    parser.add_argument("--batch", type=int, default=50, help="calls per sample (50)")
    parser.add_argument(
        "--against",
        type=Path,
        metavar="FILE",
        help="another version of crypto/xmlsig.py, timed alternately in the same run",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    return parser.parse_args(argv)


def load_version(path: Path) -> ModuleType:
    """Another crypto/xmlsig.py, imported under its own name (its imports stay the project's)."""
    spec = importlib.util.spec_from_file_location("xmlsig_against", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench/xmlsig.py: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def operations(xmlsig: ModuleType, layout: PkiLayout) -> list[Callable[[], object]]:
    """The four calls of one flow with one version of the module, on received elements."""
    hub_signer = xmlsig.Signer(layout.hub_signing().load())
    permit_verifier = xmlsig.PinnedVerifier(load_certificate(layout.hub_signing().certificate))
    provider_signer = xmlsig.Signer(layout.institution_signing(SETAGAYA).load())
    payload_verifier = xmlsig.CAVerifier(load_certificate(layout.ca().certificate))
    permit, payload = flow_messages()
    permit_element = messages.to_element(permit)
    payload_element = messages.to_element(payload)
    received_permit = parse_xml(serialize(hub_signer.sign(permit_element)))
    received_payload = parse_xml(serialize(provider_signer.sign(payload_element)))
    return [
        lambda: hub_signer.sign(permit_element),
        lambda: permit_verifier.verify(received_permit),
        lambda: provider_signer.sign(payload_element),
        lambda: payload_verifier.verify(received_payload),
    ]


def baselines(layout: PkiLayout) -> list[Callable[[], object]]:
    """Bare ECDSA sign and verify of each message's exclusive canonical bytes."""
    permit, payload = flow_messages()
    algorithm = ec.ECDSA(hashes.SHA256())
    calls: list[Callable[[], object]] = []
    for message, credentials in (
        (permit, layout.hub_signing().load()),
        (payload, layout.institution_signing(SETAGAYA).load()),
    ):
        key = credentials.private_key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        data = etree.tostring(messages.to_element(message), method="c14n", exclusive=True)
        signature = key.sign(data, algorithm)
        calls.append(functools.partial(key.sign, data, algorithm))
        calls.append(functools.partial(key.public_key().verify, signature, data, algorithm))
    return calls


def sample(call: Callable[[], object], batch: int) -> float:
    """CPU µs per call over one batch."""
    start = time.process_time()
    for _ in range(batch):
        call()
    return (time.process_time() - start) / batch * 1e6


def measure(
    named: dict[str, list[Callable[[], object]]], rounds: int, batch: int
) -> dict[str, list[float]]:
    """Median µs per call of every call of every version, interleaved in each round."""
    samples: dict[str, list[list[float]]] = {
        name: [[] for _ in calls] for name, calls in named.items()
    }
    for calls in named.values():
        for call in calls:
            for _ in range(5):
                call()
    for round_number in range(rounds):
        # Alternate which version goes first, so that neither always follows the other.
        order = list(named.items())
        if round_number % 2:
            order.reverse()
        for index in range(len(OPERATIONS)):
            for name, calls in order:
                samples[name][index].append(sample(calls[index], batch))
    return {
        name: [round(statistics.median(values), 1) for values in per_call]
        for name, per_call in samples.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    report: dict[str, Any] = {"machine": machine(), "rounds": arguments.rounds}
    report["batch"] = arguments.batch
    with tempfile.TemporaryDirectory(prefix="renkei-bench-xmlsig-") as directory:
        pki = Path(directory) / "pki"
        init_pki(
            pki,
            [
                InstitutionEntry(MEGURO, (CARE_INSURANCE,)),
                InstitutionEntry(SETAGAYA, (LOCAL_TAX, CARE_INSURANCE)),
            ],
        )
        layout = PkiLayout(pki)
        named = {"current": operations(crypto.xmlsig, layout)}
        if arguments.against is not None:
            named["against"] = operations(load_version(arguments.against), layout)
        named["ECDSA"] = baselines(layout)
        figures = measure(named, arguments.rounds, arguments.batch)
    report["microseconds"] = figures
    report["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    print(
        f"bench/xmlsig.py: {arguments.rounds} rounds x {arguments.batch} calls, CPU µs per call "
        f"(median), load {report['machine']['load_average_at_start']} -> "
        f"{report['load_average_at_end']}"
    )
    versions = [name for name in named if name != "ECDSA"]
    header = f"{'operation':40}" + "".join(f"{name:>10}" for name in versions)
    header += f"{'ECDSA':>10}" + "".join(f"{name + ' ÷ ECDSA':>18}" for name in versions)
    if "against" in figures:
        header += f"{'current ÷ against':>19}"
    print(header)
    for index, operation in enumerate(OPERATIONS):
        base = figures["ECDSA"][index]
        line = f"{operation:40}" + "".join(f"{figures[name][index]:10.1f}" for name in versions)
        line += f"{base:10.1f}" + "".join(
            f"{figures[name][index] / base:18.2f}" for name in versions
        )
        if "against" in figures:
            line += f"{figures['current'][index] / figures['against'][index]:19.2f}"
        print(line)
    print("ECDSA: " + "; ".join(BASELINES))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
