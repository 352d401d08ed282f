"""Fuzz the hardened XML parser: `parse_xml`, and `iter_children` against it.

Input layout: byte 0 chooses the limits, byte 1 is a parameter, byte 2 the streaming parser's
chunk size, the rest is the document.

- ``byte0 % 4`` in (0, 1): the default limits (1 MiB, 32 levels);
- ``byte0 % 4 == 2``: ``max_depth = 1 + byte1 % 256`` (1 … `LIBXML2_MAX_DEPTH`);
- ``byte0 % 4 == 3``: ``max_bytes = 8 * byte1`` (0 … 2040) and ``max_depth = 1 + byte0 // 4 % 8``;
- ``byte2 == 0``: `parse_xml` alone; otherwise the document is also streamed with
  `iter_children` (same limits, no element limit) fed ``byte2`` bytes at a time (255: the
  module's own chunk size), and the two parsers must agree: both refuse it, or both accept it
  with the same root and the same children (comments left out, as the stream drops them).

Every input must give either a root element or a `RenkeiError` with one of the parser's codes;
anything else escaping is a finding. An accepted document is also checked against what the
parser promises (docs/protocol.md §7): within the size limit, an element root, no document
type, entity reference or processing instruction anywhere, nesting within ``max_depth``,
every element and attribute name a qualified name lxml accepts; and its serialization
(`serialize`) parses again to the same serialization. Outcomes the parser's C code reaches
(libxml2's error numbers, the shape of accepted trees) are fed back to libFuzzer as extra
coverage (`fuzz_feedback`).

A campaign (docs/reliability.md, "Fuzzing")::

    nice -n 10 .venv/bin/python fuzz/hardened_xml.py -runs=1000000 -timeout=10 \\
        -dict=fuzz/xml.dict -artifact_prefix=/tmp/fuzz-artifacts/hardened_xml/ \\
        /tmp/fuzz-corpus/hardened_xml fuzz/corpus/hardened_xml
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import atheris
from fuzz_feedback import Features
from lxml import etree

with atheris.instrument_imports(include=["middleware", "codes"]):
    from codes.errors import RenkeiError
    from middleware import hardened_xml
    from middleware.hardened_xml import (
        DEFAULT_MAX_BYTES,
        DEFAULT_MAX_DEPTH,
        LIBXML2_MAX_DEPTH,
        iter_children,
        parse_xml,
        serialize,
    )

PARSER_CODES = frozenset({"XmlTooLarge", "XmlDoctypeForbidden", "XmlMalformed", "XmlTooDeep"})
DEFAULT_CHUNK = hardened_xml.CHUNK_SIZE
FEATURES = Features()


def limits(mode: int, parameter: int) -> tuple[int, int]:
    """The (max_bytes, max_depth) the first two bytes of an input choose."""
    if mode % 4 == 2:
        return DEFAULT_MAX_BYTES, 1 + parameter % LIBXML2_MAX_DEPTH
    if mode % 4 == 3:
        return 8 * parameter, 1 + mode // 4 % 8
    return DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH


def depth(root: etree._Element) -> int:
    """The deepest element level of a tree (the root is level 1), without recursion."""
    deepest = 0
    stack = [(root, 1)]
    while stack:
        element, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in element if isinstance(child.tag, str))
    return deepest


def check_accepted(document: bytes, root: etree._Element, max_bytes: int, max_depth: int) -> None:
    """Fail (AssertionError: a finding) if an accepted document breaks a promise of the parser."""
    assert len(document) <= max_bytes, "a document over max_bytes was accepted"
    assert isinstance(root.tag, str), "the root is not an element"
    docinfo: Any = root.getroottree().docinfo  # the stubs lack DocInfo.doctype
    assert not docinfo.doctype, "a document type declaration was accepted"
    assert docinfo.internalDTD is None and docinfo.externalDTD is None, "a DTD was accepted"
    for node in root.iter():
        assert not isinstance(node, etree._Entity), "an entity reference was accepted"
        assert not isinstance(node, etree._ProcessingInstruction), "a PI was accepted"
    for sibling in (*root.itersiblings(preceding=True), *root.itersiblings()):
        assert not isinstance(sibling, etree._ProcessingInstruction), "a PI was accepted"
    assert depth(root) <= max_depth, f"a document deeper than {max_depth} was accepted"
    for element in root.iter(tag=etree.Element):
        for name in (element.tag, *element.attrib):
            assert isinstance(name, str)
            assert qualified_name(name), f"parse_xml accepted the name {name!r}"
    written = serialize(root)
    again = parse_xml(written, max_bytes=len(written), max_depth=max_depth)
    assert serialize(again) == written, "the serialization does not parse back to itself"


def qualified_name(name: str) -> bool:
    """False if lxml refuses ``name`` as a qualified name (what every reader of names does)."""
    try:
        etree.QName(name)
    except ValueError:
        return False
    return True


def streamed(
    document: bytes, max_bytes: int, max_depth: int, chunk: int
) -> tuple[str, list[bytes]] | RenkeiError:
    """The stream's root (tag and attributes) and children, serialized, or its refusal."""
    hardened_xml.CHUNK_SIZE = chunk
    try:
        stream = iter_children(
            document, max_bytes=max_bytes, max_depth=max_depth, max_child_elements=1 << 30
        )
        children = [etree.tostring(child, with_tail=False) for child in stream.children()]
    except RenkeiError as refusal:
        assert refusal.code in PARSER_CODES, f"unexpected code {refusal.code} from the stream"
        FEATURES.refusal(refusal, "stream")
        return refusal
    finally:
        hardened_xml.CHUNK_SIZE = DEFAULT_CHUNK
    assert stream.root is not None, "the stream accepted a document without a root"
    return root_key(stream.root), children


def root_key(root: etree._Element) -> str:
    """The root's tag and attributes (what the stream keeps of it)."""
    return repr((root.tag, list(root.attrib.items())))


def tree_view(root: etree._Element) -> tuple[str, list[bytes]]:
    """What the stream should give for an accepted tree: its root and children, no comments."""
    clean = copy.deepcopy(root)
    etree.strip_elements(clean, etree.Comment, with_tail=False)
    children = [etree.tostring(child, with_tail=False) for child in clean]
    return root_key(clean), children


def TestOneInput(data: bytes) -> None:
    if len(data) < 3:
        return
    max_bytes, max_depth = limits(data[0], data[1])
    chunk = DEFAULT_CHUNK if data[2] == 255 else data[2]
    document = data[3:]
    tree: etree._Element | RenkeiError
    try:
        tree = parse_xml(document, max_bytes=max_bytes, max_depth=max_depth)
    except RenkeiError as refusal:
        assert refusal.code in PARSER_CODES, f"unexpected code {refusal.code}"
        FEATURES.refusal(refusal)
        tree = refusal
    else:
        FEATURES.tree(tree)
        check_accepted(document, tree, max_bytes, max_depth)
    if chunk == 0 or max_depth < 2:
        return
    stream = streamed(document, max_bytes, max_depth, chunk)
    if isinstance(tree, RenkeiError):
        assert isinstance(stream, RenkeiError), (
            f"the stream accepted what parse_xml refused ({tree.code})"
        )
    else:
        assert not isinstance(stream, RenkeiError), (
            f"the stream refused what parse_xml accepted ({stream.code})"
        )
        assert stream == tree_view(tree), "the stream and parse_xml read different documents"


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
