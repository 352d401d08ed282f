"""Hostile input at every listener: coded 4xx answers, nothing stored, memory given back.

A back office (or anyone holding a client certificate) may post files built to exhaust the
node: millions of elements within the size limit, bodies larger than any route accepts sent
chunked or with a declared length. Each is refused with a stable code while it is read, and
the process's memory returns near where it was.
"""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from adapters.care_insurance.replica_file import (
    MAX_ENTRY_ELEMENTS,
    MAX_FILE_BYTES,
    read_replica_file,
)
from adapters.network_link import host_and_port
from codes.errors import RenkeiError
from crypto.pki import CredentialPaths, PkiLayout
from middleware.process_memory import release_free_memory
from tests.network import CARE_INSURANCE, MEGURO
from tests.test_replica_file import entry, read_result, replica_document, stored_rows

MEBIBYTE = 1_048_576
HEADER = (
    b"<SPIRegistrationDeleteList><MessageHeader><MSGID/><MSGTypeID>IF</MSGTypeID>"
    b"<MSGMode>0</MSGMode><SourceSystemID>care-insurance</SourceSystemID>"
    b"<DestinationSystemID/><ReceptionNumber>R1</ReceptionNumber><MSGResult/></MessageHeader>"
    b"<SegmentOfRegistrationDelete>1</SegmentOfRegistrationDelete>"
)


def many_elements_file(size: int = MAX_FILE_BYTES) -> bytes:
    """A file of ``size`` bytes: the right root and millions of empty ``<x/>`` elements."""
    head, tail = b"<SPIRegistrationDeleteList>", b"</SPIRegistrationDeleteList>"
    return head + b"<x/>" * ((size - len(head) - len(tail)) // 4) + tail


def resident_bytes() -> int:
    """This process's resident set size."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * 4096


def refusal_of(document: bytes) -> RenkeiError:
    """Read a 副本 file expecting a refusal, and return it."""
    with pytest.raises(RenkeiError) as info:
        read_replica_file(document, MEGURO)
    return info.value


# -- the 副本 file reader, alone ------------------------------------------------------------


def test_file_of_millions_of_elements_is_refused_at_the_first_unexpected_one() -> None:
    """64 MiB of <x/> under the right root is ReplicaFileInvalid, naming the element."""
    error = refusal_of(many_elements_file())
    assert error.code == "ReplicaFileInvalid"
    assert "Element 'x'" in error.message_en and "MessageHeader" in error.message_en


def test_entry_holding_too_many_elements_is_refused_while_it_is_read() -> None:
    """An entry with more than MAX_ENTRY_ELEMENTS elements inside is XmlTooManyElements."""
    entry_of_millions = (
        HEADER
        + b"<InformationOfSPIRegistrationDelete>"
        + b"<x/>" * (15 * MEBIBYTE)
        + b"</InformationOfSPIRegistrationDelete></SPIRegistrationDeleteList>"
    )
    error = refusal_of(entry_of_millions)
    assert (error.code, error.status) == ("XmlTooManyElements", 413)
    assert str(MAX_ENTRY_ELEMENTS) in error.message_en


def test_file_of_millions_of_comments_is_refused_for_what_it_lacks() -> None:
    """Comments are dropped while reading: a file of nothing but them has no entry."""
    error = refusal_of(HEADER + b"<!---->" * (8 * MEBIBYTE) + b"</SPIRegistrationDeleteList>")
    assert error.code == "ReplicaFileInvalid"
    assert "Missing child element(s)" in error.message_en


def test_processing_instruction_inside_a_file_is_refused() -> None:
    """A processing instruction anywhere in a streamed file is XmlMalformed."""
    document = replica_document(entry("PI-1")).replace(b"<MSGID>", b"<?evil x?><MSGID>", 1)
    assert refusal_of(document).code == "XmlMalformed"


def test_elements_out_of_order_are_refused_with_what_was_expected() -> None:
    """An entry before the segment names the element the schema expected instead."""
    document = replica_document(entry("ORDER-1")).replace(
        b"<SegmentOfRegistrationDelete>1</SegmentOfRegistrationDelete>", b"", 1
    )
    error = refusal_of(document)
    assert error.code == "ReplicaFileInvalid"
    assert "Expected is ( SegmentOfRegistrationDelete )" in error.message_en


def test_text_between_the_parts_of_a_file_is_refused() -> None:
    """Character data directly under the root is not part of a 副本 file."""
    document = replica_document(entry("TEXT-1")).replace(
        b"</MessageHeader>", b"</MessageHeader>stray text", 1
    )
    assert refusal_of(document).code == "ReplicaFileInvalid"


def test_attribute_on_the_root_is_refused() -> None:
    """The root element takes no attribute."""
    document = replica_document(entry("ATTR-1")).replace(
        b"<SPIRegistrationDeleteList>", b'<SPIRegistrationDeleteList a="1">', 1
    )
    assert refusal_of(document).code == "ReplicaFileInvalid"


def test_deep_nesting_inside_an_entry_is_refused_as_too_deep() -> None:
    """Nesting beyond the file's depth limit is XmlTooDeep, met while reading."""
    deep = "<a>" * 20 + "</a>" * 20
    document = replica_document(entry("DEEP-1", extra=deep))
    assert refusal_of(document).code == "XmlTooDeep"


# -- posted to a running node --------------------------------------------------------------


async def post_replica_file(box: Any, document: bytes) -> tuple[int, bytes]:
    """POST /replica-files as Meguro's care-insurance system."""
    from tests.test_replica_file import post_file

    status, body, _ = await post_file(box, document)
    return status, body


@pytest_twisted.ensureDeferred
async def test_posted_file_of_millions_of_elements_is_a_coded_400_and_memory_returns(
    box: Any,
) -> None:
    """The 64 MiB many-element file is answered 400 ReplicaFileInvalid with a result file,
    nothing is stored, and the process's resident size comes back within 128 MiB."""
    await post_replica_file(box, replica_document(entry("WARM-1")))  # first-use allocations
    release_free_memory()
    before = resident_bytes()
    status, body = await post_replica_file(box, many_elements_file())
    assert status == 400
    result = read_result(body)
    assert (result.header["MSGResult"], result.file_error) == ("9", "ReplicaFileInvalid")
    release_free_memory()
    assert resident_bytes() - before < 128 * MEBIBYTE
    assert "WARM-1" in stored_rows(box.nodes["meguro"].database)


@pytest_twisted.ensureDeferred
async def test_posted_entry_of_millions_of_elements_is_a_coded_413(box: Any) -> None:
    """An entry stuffed with elements is answered 413 XmlTooManyElements, nothing stored."""
    document = (
        HEADER
        + b"<InformationOfSPIRegistrationDelete>"
        + b"<x/>" * (4 * MEBIBYTE)
        + b"</InformationOfSPIRegistrationDelete></SPIRegistrationDeleteList>"
    )
    status, body = await post_replica_file(box, document)
    assert status == 413
    assert read_result(body).file_error == "XmlTooManyElements"


# -- bodies over a listener's limit ----------------------------------------------------------


def _client_context(layout: PkiLayout, credentials: CredentialPaths) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=layout.ca().certificate)
    context.check_hostname = False  # the names are checked by the project's own clients
    context.load_cert_chain(credentials.certificate, credentials.key)
    return context


def _send_raw(
    address: str, context: ssl.SSLContext, head: bytes, body_chunks: int, chunk: bytes
) -> tuple[int, bytes]:
    """Send ``head`` then up to ``body_chunks`` copies of ``chunk``; stop when the server
    closes. Returns how many body bytes were sent and what the server answered."""
    host, port = host_and_port(address)
    sent = 0
    with (
        socket.create_connection((host, port), timeout=30) as raw,
        context.wrap_socket(raw) as tls,
    ):
        if True:
            tls.sendall(head)
            try:
                for _ in range(body_chunks):
                    tls.sendall(chunk)
                    sent += len(chunk)
            except OSError:
                pass  # the server closed the connection: what it answered is below
            answer = b""
            try:
                while True:
                    data = tls.recv(65536)
                    if not data:
                        break
                    answer += data
            except OSError:
                pass
    return sent, answer


def _status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def declare_too_much(
    address: str, context: ssl.SSLContext, target: bytes, content_type: bytes, length: int
) -> tuple[int, bytes]:
    """POST headers declaring a body of ``length`` bytes, send none; the status and body."""
    head = (
        b"POST "
        + target
        + b" HTTP/1.1\r\nHost: renkei\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(length).encode()
        + b"\r\n\r\n"
    )
    _, answer = await deferToThread(_send_raw, address, context, head, 0, b"")
    return _status_and_body(answer)


@pytest_twisted.ensureDeferred
async def test_declared_body_over_the_limit_is_refused_before_it_is_sent(box: Any) -> None:
    """A Content-Length above the back office's 64 MiB is answered 413 BodyTooLarge (JSON)
    as soon as the headers are read: the body is never needed."""
    layout = PkiLayout(box.config.pki)
    meguro = box.config.institution("meguro")
    context = _client_context(layout, layout.back_office_client(MEGURO, CARE_INSURANCE))
    status, body = await declare_too_much(
        meguro.back_office_address,
        context,
        b"/replica-files",
        b"application/xml",
        MAX_FILE_BYTES + 1,
    )
    assert status == 413
    assert json.loads(body)["error"]["code"] == "BodyTooLarge"


@pytest_twisted.ensureDeferred
async def test_chunked_body_over_the_limit_is_cut_while_it_arrives(box: Any) -> None:
    """A 256 MiB chunked upload is cut off after the limit: the sender cannot deliver it all,
    and whatever it reads back is 413 BodyTooLarge; nothing is stored."""
    layout = PkiLayout(box.config.pki)
    meguro = box.config.institution("meguro")
    context = _client_context(layout, layout.back_office_client(MEGURO, CARE_INSURANCE))
    head = (
        b"POST /replica-files HTTP/1.1\r\nHost: node\r\n"
        b"Content-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    payload = b"<x/>" * (MEBIBYTE // 4)
    chunk = f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
    sent, answer = await deferToThread(
        _send_raw, meguro.back_office_address, context, head, 256, chunk
    )
    assert sent < 128 * MEBIBYTE
    if answer:
        status, body = _status_and_body(answer)
        assert status == 413
        assert json.loads(body)["error"]["code"] == "BodyTooLarge"


@pytest_twisted.ensureDeferred
async def test_network_listener_refuses_a_body_over_one_message_with_an_error_message(
    tls_box: Any,
) -> None:
    """The node's network listener answers a body over 1 MiB with an XML Error message."""
    from middleware import messages

    layout = PkiLayout(tls_box.config.pki)
    context = _client_context(layout, layout.hub_tls())
    status, body = await declare_too_much(
        tls_box.config.institution("meguro").network_address,
        context,
        b"/provision-requests",
        b"application/xml",
        2 * MEBIBYTE,
    )
    assert status == 413
    assert messages.decode(body, messages.ErrorMessage).code == "BodyTooLarge"


@pytest_twisted.ensureDeferred
async def test_console_refuses_a_form_body_over_its_limit(box: Any) -> None:
    """The console (forms only) answers a 1 MiB body with 413 BodyTooLarge in plain text."""
    layout = PkiLayout(box.config.pki)
    context = ssl.create_default_context(cafile=layout.ca().certificate)
    context.check_hostname = False
    status, body = await declare_too_much(
        box.config.institution("meguro").console_address,
        context,
        b"/login",
        b"application/x-www-form-urlencoded",
        MEBIBYTE,
    )
    assert status == 413
    assert body.startswith(b"BodyTooLarge: ")
