"""Fuzz every message decoder of `middleware.messages`.

Input layout: byte 0 chooses the message type and the path, the rest is the document.
``TYPES`` lists every type of the registry (``messages.MESSAGE_TYPES``) sorted by root element name;
``byte0 % len(TYPES)`` picks one, ``byte0 // len(TYPES) % 2`` picks a variant:

- an unsigned type: ``decode(document, T)``; a `ProvisionRequest`'s (unverified) permit is
  then built with ``from_element(request.permit_element, Permit)``, as a provider does once
  the permit's signature is verified;
- a signed type (`PermittedListDocument`, `Permit`, `ProvisionPayload`):
  ``decode_signed(document, T)`` then ``from_element(element, T)`` without verifying the
  signature: on the element as returned (variant 0) or with its ``ds:Signature`` removed, as
  the verifier's output has it (variant 1).

Outcomes libxml2 reaches (parser error codes, schema errors, accepted trees) are fed back to
libFuzzer as extra coverage (`fuzz_feedback`).

Every input must give a message or a `RenkeiError` with a parser code, ``UnexpectedMessage``
or ``XmlSchemaInvalid``; anything else is a finding. A decoded message must also survive a
round trip: encoded again (signed types with a placeholder signature) it decodes to an equal
message.

A campaign (docs/reliability.md, "Fuzzing")::

    nice -n 10 .venv/bin/python fuzz/messages.py -runs=1000000 -timeout=10 \\
        -dict=fuzz/xml.dict -artifact_prefix=/tmp/fuzz-artifacts/messages/ \\
        /tmp/fuzz-corpus/messages fuzz/corpus/messages
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import atheris
from fuzz_feedback import Features, schema_names
from lxml import etree

with atheris.instrument_imports(include=["middleware", "codes"]):
    from codes.errors import RenkeiError
    from middleware import messages
    from middleware.hardened_xml import parse_xml

TYPES: tuple[type[Any], ...] = tuple(
    sorted(messages.MESSAGE_TYPES, key=lambda message_type: messages.root_name(message_type))
)
SIGNED = frozenset(t for t in messages.MESSAGE_TYPES if messages.is_signed(t))
DECODE_CODES = frozenset(
    {
        "XmlTooLarge",
        "XmlDoctypeForbidden",
        "XmlMalformed",
        "XmlTooDeep",
        "UnexpectedMessage",
        "XmlSchemaInvalid",
    }
)
# What from_element may refuse: the element has been checked by decode_signed already.
BUILD_CODES = frozenset({"UnexpectedMessage", "XmlSchemaInvalid"})
FEATURES = Features(names=schema_names(*sorted(messages.SCHEMA_DIR.glob("*.xsd"))))
# The harness's own compiled schemas, to tell libFuzzer which schema error a refusal was.
SCHEMAS = {
    t: etree.XMLSchema(etree.parse(str(messages.SCHEMA_DIR / f"{messages.root_name(t)}.xsd")))
    for t in TYPES
}


def without_signature(element: etree._Element) -> etree._Element:
    """A copy of a signed element without its ds:Signature children (the verifier's output)."""
    copied = copy.deepcopy(element)
    for child in list(copied):
        if isinstance(child.tag, str) and etree.QName(child).namespace == messages.DSIG_NS:
            copied.remove(child)
    return copied


def same_request(a: messages.ProvisionRequest, b: messages.ProvisionRequest) -> bool:
    return (
        a.message_id == b.message_id
        and a.route == b.route
        and etree.tostring(a.permit_element) == etree.tostring(b.permit_element)
    )


def refused(refusal: RenkeiError, message_type: type[Any], document: bytes) -> None:
    """Check a refusal of decode or decode_signed and feed its features back."""
    assert refusal.code in DECODE_CODES, f"unexpected code {refusal.code}"
    name = message_type.__name__
    if refusal.code == "XmlSchemaInvalid":
        root = parse_xml(document)  # decode parsed it
        if FEATURES.schema(SCHEMAS[message_type], root, name):
            return
    FEATURES.refusal(refusal, name)


def shape(message: Any) -> tuple[bool, ...]:
    """Which fields of a decoded message are set (a feature of what the schema let through)."""
    return tuple(getattr(message, name) not in (None, (), "", b"") for name in message.__slots__)


def fuzz_unsigned(message_type: type[Any], document: bytes) -> None:
    name = message_type.__name__
    try:
        message = messages.decode(document, message_type)
    except RenkeiError as refusal:
        refused(refusal, message_type, document)
        return
    FEATURES.hit("decoded", name, shape(message))
    again = messages.decode(messages.encode(message), message_type)
    if message_type is messages.ProvisionRequest:
        assert same_request(message, again), "a ProvisionRequest does not round-trip"
        try:
            messages.from_element(message.permit_element, messages.Permit)
        except RenkeiError as refusal:
            assert refusal.code in BUILD_CODES, f"unexpected code {refusal.code}"
            FEATURES.refusal(refusal, name, "permit")
    else:
        assert again == message, f"a {message_type.__name__} does not round-trip"


def fuzz_signed(message_type: type[Any], document: bytes, strip: bool) -> None:
    name = message_type.__name__
    try:
        element = messages.decode_signed(document, message_type)
    except RenkeiError as refusal:
        refused(refusal, message_type, document)
        return
    FEATURES.tree(element, name)
    if strip:
        element = without_signature(element)
    try:
        message = messages.from_element(element, message_type)
    except RenkeiError as refusal:
        assert refusal.code in BUILD_CODES, f"unexpected code {refusal.code}"
        FEATURES.refusal(refusal, name, "build", strip)
        return
    FEATURES.hit("built", name, strip, shape(message))
    rebuilt = messages.to_element(message)
    etree.SubElement(rebuilt, f"{{{messages.DSIG_NS}}}Signature")
    again = messages.from_element(
        messages.decode_signed(messages.serialize(rebuilt), message_type), message_type
    )
    assert again == message, f"a {message_type.__name__} does not round-trip"


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    message_type = TYPES[data[0] % len(TYPES)]
    variant = data[0] // len(TYPES) % 2
    if message_type in SIGNED:
        fuzz_signed(message_type, data[1:], strip=variant == 1)
    else:
        fuzz_unsigned(message_type, data[1:])


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
