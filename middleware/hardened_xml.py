"""The one XML parser of the project: every untrusted document goes through `parse_xml`.

The checks run in a fixed order, cheapest and most protective first:

1. size: a document longer than ``max_bytes`` is refused (``XmlTooLarge``) before any parsing;
2. pre-scan: the raw bytes are searched for ``<!DOCTYPE`` and ``<!ENTITY`` (in UTF-8/ASCII and
   both UTF-16 byte orders), so that entity bombs and external DTDs are refused
   (``XmlDoctypeForbidden``) before libxml2 reads a single declaration. The scan is deliberately
   blunt: the same characters inside a comment or a CDATA section also refuse the document.
   Documents produced by `serialize` never contain them, since lxml escapes ``<`` in text and
   attribute values;
3. parse: libxml2 with entity substitution, DTD loading, network access and huge trees all
   disabled. A well-formedness error is refused as ``XmlMalformed`` with libxml2's message; a
   reference to an undeclared entity, or libxml2's entity-amplification limit (it still checks
   declared entities even when not substituting them), as ``XmlDoctypeForbidden``; libxml2's
   own nesting limit (256 levels without ``huge_tree``) as ``XmlTooDeep``; a namespace error
   (an undeclared prefix, a malformed qualified name) as ``XmlMalformed``, also when libxml2
   reports a warning after it (lxml would otherwise raise for the last message only);
4. post-parse: the tree is refused (``XmlDoctypeForbidden``) if it has a document type
   declaration, an internal or external subset, or any entity reference node — this is the
   authoritative check, whatever the encoding — and (``XmlMalformed``) if it has a processing
   instruction anywhere;
5. depth: a level-by-level walk (a compiled XPath location path of ``max_depth + 1`` steps, run
   by libxml2 without recursion) refuses (``XmlTooDeep``) a document with an element nested
   deeper than ``max_depth`` (the root is at depth 1); it never descends below that level.

`parse_xml` builds the whole tree, for documents of at most `MAX_TREE_BYTES` (a network message
is at most 1 MiB). Larger documents (副本 files) are read with `iter_children`, which streams
with the same checks in the same order of precedence: the pre-scan; a first pass of libxml2
over the whole document without building anything (well-formedness and namespace errors, for
a fifth of a second per 60 MiB); then the document read piece by piece, the DOCTYPE check at
the root's start, entity references, processing instructions and depth as they come, each
child of the root handed over once complete and dropped once the parser is past it, and at
most ``max_child_elements`` elements under any one child, so that neither a huge tree nor
libxml2's XPath limits are ever reached. Measured on a 60 MiB file of 110,000 entries: 1.2 s
(2.8 s on a loaded machine) against 0.65 s for one tree, and a flat resident size against
330 MB more for the tree.

lxml parsers and XPath evaluators are not thread-safe, so each thread gets its own
(`threading.local`). Measured with lxml 6.1 / libxml2 2.14: creating a parser per call adds about
1 µs to a 1.5 µs parse of a small message; the checks add about 2 µs; a 900 kB document with
54,000 elements parses in about 12 ms and the post-parse checks add about 1 ms.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

from lxml import etree

from codes.errors import (
    XML_DOCTYPE_FORBIDDEN,
    XML_MALFORMED,
    XML_TOO_DEEP,
    XML_TOO_LARGE,
    XML_TOO_MANY_ELEMENTS,
    RenkeiError,
)

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "LIBXML2_MAX_DEPTH",
    "MAX_TREE_BYTES",
    "StreamedDocument",
    "iter_children",
    "parse_xml",
    "serialize",
    "thread_parser",
]

DEFAULT_MAX_BYTES = 1_048_576
DEFAULT_MAX_DEPTH = 32
# The largest document `parse_xml` turns into one tree. libxml2 keeps about 100 bytes per
# element, and its XPath node sets (the depth check) stop at 10 million nodes: 16 MiB of
# ``<x/>`` is 4 million elements and some 400 MB of tree, transient. Stream anything larger.
MAX_TREE_BYTES = 16 * 1_048_576
# Bytes fed to the streaming parser at a time (the fuzz harnesses vary it).
CHUNK_SIZE = 65_536
# libxml2 refuses deeper documents by itself unless XML_PARSE_HUGE (huge_tree) is set.
LIBXML2_MAX_DEPTH = 256

_FORBIDDEN_MARKERS: tuple[bytes, ...] = tuple(
    marker.encode(encoding)
    for marker in ("<!DOCTYPE", "<!ENTITY")
    for encoding in ("utf-8", "utf-16-le", "utf-16-be")
)
assert all(b"!" in marker for marker in _FORBIDDEN_MARKERS)  # what `_prescan` relies on

_local = threading.local()


def _prescan(data: bytes, max_bytes: int) -> None:
    """The checks on raw bytes, before any parsing: size, then DOCTYPE and ENTITY markers."""
    if not isinstance(data, bytes):
        raise TypeError(f"expected bytes, not {type(data).__name__}")
    size = len(data)
    if size > max_bytes:
        raise RenkeiError(XML_TOO_LARGE, size=size, limit=max_bytes)
    # Every marker holds the byte of "!" (0x21) in each encoding: a document without one
    # (most messages) has none of them, which one scan for a byte tells at once.
    if b"!" in data and any(marker in data for marker in _FORBIDDEN_MARKERS):
        raise RenkeiError(XML_DOCTYPE_FORBIDDEN)


def thread_parser() -> etree.XMLParser:
    """Return this thread's hardened parser, creating it on first use."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_blank_text=False,
        )
        _local.parser = parser
    return parser


def _too_deep_finder(max_depth: int) -> etree.XPath:
    """Return this thread's compiled ``boolean(/*/*/…)`` test for an element below ``max_depth``.

    The location path has ``max_depth + 1`` steps, each selecting the children of the previous
    level: libxml2 walks the tree level by level (no recursion) and never looks below the first
    level that is too deep. It is about thirty times faster than a Python-level walk.
    """
    finders: dict[int, etree.XPath] | None = getattr(_local, "depth_finders", None)
    if finders is None:
        finders = _local.depth_finders = {}
    finder = finders.get(max_depth)
    if finder is None:
        finder = finders[max_depth] = etree.XPath(
            "boolean(/" + "/".join(["*"] * (max_depth + 1)) + ")"
        )
    return finder


def _refuse_syntax_error(error: etree.XMLSyntaxError, max_depth: int) -> RenkeiError:
    """Translate a libxml2 parse failure into the stable error it stands for."""
    detail = str(error.msg or error)
    code: int = getattr(error, "code", 0)  # libxml2's error number (missing from the stubs)
    if code in (
        etree.ErrorTypes.ERR_UNDECLARED_ENTITY,
        etree.ErrorTypes.WAR_UNDECLARED_ENTITY,
    ):
        return RenkeiError(XML_DOCTYPE_FORBIDDEN)
    if code == etree.ErrorTypes.ERR_RESOURCE_LIMIT:
        if "depth" in detail.lower():
            return RenkeiError(XML_TOO_DEEP, limit=max_depth)
        if "entit" in detail.lower():  # "Maximum entity amplification factor exceeded"
            return RenkeiError(XML_DOCTYPE_FORBIDDEN)
    return RenkeiError(XML_MALFORMED, detail=detail)


def _check_node(node: object) -> None:
    """Refuse entity references and processing instructions found in the tree."""
    if isinstance(node, etree._Entity):
        raise RenkeiError(XML_DOCTYPE_FORBIDDEN)
    if isinstance(node, etree._ProcessingInstruction):
        raise RenkeiError(XML_MALFORMED, detail="processing instructions are not accepted")


def parse_xml(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> etree._Element:
    """Parse an untrusted document and return its root element, or raise a `RenkeiError`.

    Raises ``XmlTooLarge``, ``XmlDoctypeForbidden``, ``XmlMalformed`` or ``XmlTooDeep`` as
    described in the module docstring. ``max_depth`` may not exceed `LIBXML2_MAX_DEPTH`, nor
    ``max_bytes`` `MAX_TREE_BYTES`.
    """
    if not 1 <= max_depth <= LIBXML2_MAX_DEPTH:
        raise ValueError(f"max_depth must be between 1 and {LIBXML2_MAX_DEPTH}")
    if max_bytes > MAX_TREE_BYTES:
        raise ValueError(f"max_bytes above {MAX_TREE_BYTES}: stream the document (iter_children)")
    _prescan(data, max_bytes)

    parser = thread_parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise _refuse_syntax_error(error, max_depth) from None
    # lxml raises for the last error libxml2 reported only: a namespace error followed by a
    # warning (a relative namespace URI, say) would pass.
    for entry in parser.error_log:
        if entry.level >= etree.ErrorLevels.ERROR:
            raise RenkeiError(XML_MALFORMED, detail=entry.message)

    docinfo: Any = root.getroottree().docinfo  # the stubs lack DocInfo.doctype
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise RenkeiError(XML_DOCTYPE_FORBIDDEN)
    for sibling in root.itersiblings(preceding=True):
        _check_node(sibling)
    for sibling in root.itersiblings():
        _check_node(sibling)

    for node in root.iter(etree.Entity, etree.ProcessingInstruction):
        _check_node(node)
    if _too_deep_finder(max_depth)(root):
        raise RenkeiError(XML_TOO_DEEP, limit=max_depth)
    return root


_XML_SPACE = " \t\n\r"


def _is_xml_space(text: str | None) -> bool:
    """Whether ``text`` is empty or XML white space only (not Python's wider idea of it)."""
    return not text or not text.strip(_XML_SPACE)


class StreamedDocument:
    """An untrusted document read incrementally (see `iter_children`).

    ``root`` is the root element once the parser has seen it (None before): its tag and
    attributes are complete, its children are only those not yet handed over.
    """

    def __init__(
        self,
        data: bytes,
        *,
        max_bytes: int,
        max_depth: int,
        max_child_elements: int,
        refuse_text: Callable[[int], RenkeiError] | None = None,
    ) -> None:
        if not 2 <= max_depth <= LIBXML2_MAX_DEPTH:
            raise ValueError(f"max_depth must be between 2 and {LIBXML2_MAX_DEPTH}")
        self._data = data
        self._max_bytes = max_bytes
        self._max_depth = max_depth
        self._max_child_elements = max_child_elements
        self._refuse_text = refuse_text
        self.root: etree._Element | None = None
        self._depth = 0
        self._below_child = 0  # elements inside the current child of the root
        self._done: etree._Element | None = None  # the child handed over, not yet removed

    def children(self) -> Iterator[etree._Element]:
        """Each child element of the root, complete, in document order.

        A child is cleared and removed from the tree once the parser has moved past it (its
        tail, the text after it, is then complete and checked), so memory holds about one
        child at a time; a child's ``tail`` is not meaningful to the caller. Raises
        `RenkeiError` as `parse_xml` does, at the point where the problem is met (children
        before it have been handed over); ``XmlTooManyElements`` for a child holding more than
        ``max_child_elements`` elements; and, with ``refuse_text``, the error it makes (given
        the line) for text other than XML white space directly under the root.
        """
        _prescan(self._data, self._max_bytes)
        _check_well_formed(self._data, self._max_depth)
        parser = etree.XMLPullParser(
            events=("start", "end", "pi"),
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
        )
        data = self._data
        for offset in range(0, max(len(data), 1), CHUNK_SIZE):
            try:
                parser.feed(data[offset : offset + CHUNK_SIZE])
                events: list[Any] = list(parser.read_events())
            except etree.XMLSyntaxError as error:
                raise _refuse_syntax_error(error, self._max_depth) from None
            yield from self._handle(events)
        try:
            parser.close()
        except etree.XMLSyntaxError as error:
            raise _refuse_syntax_error(error, self._max_depth) from None
        # libxml2 delivers the events of a document shorter than its look-ahead at close.
        yield from self._handle(list(parser.read_events()))
        for entry in parser.error_log:
            if entry.level >= etree.ErrorLevels.ERROR:
                raise RenkeiError(XML_MALFORMED, detail=entry.message)

    def _handle(self, events: Iterable[tuple[str, Any]]) -> Iterator[etree._Element]:
        for event, found in events:
            node = cast(etree._Element, found)
            line = cast("int | None", node.sourceline)
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self.root = node
                    _refuse_document_type(node)
                elif self._depth == 2:
                    self._drop_done(line)
                elif self._depth > self._max_depth:
                    raise RenkeiError(XML_TOO_DEEP, limit=self._max_depth)
                else:
                    self._below_child += 1
                    if self._below_child > self._max_child_elements:
                        raise RenkeiError(XML_TOO_MANY_ELEMENTS, limit=self._max_child_elements)
            elif event == "end":
                self._depth -= 1
                if self._depth == 1:
                    self._below_child = 0
                    for inner in node.iter(etree.Entity):
                        _check_node(inner)
                    self._done = node
                    yield node
                elif self._depth == 0:
                    self._drop_done(line)
            else:
                raise RenkeiError(XML_MALFORMED, detail="processing instructions are not accepted")

    def _drop_done(self, line: int | None) -> None:
        """The parser is past the last child handed over: check the text before ``line``
        (the root's text, or that child's tail), then clear and remove that child."""
        root, done = self.root, self._done
        if done is not None:
            text = done.tail
        elif root is not None:
            text = root.text
        else:
            text = None
        if self._refuse_text is not None and not _is_xml_space(text):
            raise self._refuse_text(line or 0)
        if done is not None:
            done.clear()
            parent = done.getparent()
            if parent is not None:
                parent.remove(done)
            self._done = None


class _NoTree:
    """A parser target with no callbacks: libxml2 parses without building anything."""

    def close(self) -> None:
        return None


def _check_well_formed(data: bytes, max_depth: int) -> None:
    """Parse the whole document once without building a tree (libxml2 alone, no Python per
    element: 0.2 s and no memory for 60 MiB), so that a document that is not well-formed is
    refused as such (``XmlMalformed``, entity and depth codes as `parse_xml` gives them)
    before anything is read from it, whatever else is wrong with it."""
    parser = etree.XMLParser(
        target=cast(Any, _NoTree()),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )
    try:
        etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise _refuse_syntax_error(error, max_depth) from None
    for entry in parser.error_log:
        if entry.level >= etree.ErrorLevels.ERROR:
            raise RenkeiError(XML_MALFORMED, detail=entry.message)


def _refuse_document_type(root: etree._Element) -> None:
    """The post-parse DOCTYPE check of `parse_xml`, at the root's start (the declaration
    comes before the root; an encoding may hide it from the byte pre-scan)."""
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise RenkeiError(XML_DOCTYPE_FORBIDDEN)


def iter_children(
    data: bytes,
    *,
    max_bytes: int,
    max_depth: int,
    max_child_elements: int,
    refuse_text: Callable[[int], RenkeiError] | None = None,
) -> StreamedDocument:
    """Stream an untrusted document too large to hold as one tree (a 副本 file).

    The same pre-scan (size, DOCTYPE and ENTITY markers) and parser settings as `parse_xml`,
    and its post-parse checks as the document arrives: a document type declaration
    (``XmlDoctypeForbidden``, checked when the root starts), entity references
    (``XmlDoctypeForbidden``), processing instructions anywhere (``XmlMalformed``), nesting
    deeper than ``max_depth`` (``XmlTooDeep``), namespace errors (``XmlMalformed``, at the
    end); comments are dropped. Iterate ``document.children()`` and read ``document.root``
    for the root element.
    """
    return StreamedDocument(
        data,
        max_bytes=max_bytes,
        max_depth=max_depth,
        max_child_elements=max_child_elements,
        refuse_text=refuse_text,
    )


def serialize(element: etree._Element) -> bytes:
    """Serialize an element (without its tail) as UTF-8 with an XML declaration."""
    return etree.tostring(element, encoding="UTF-8", xml_declaration=True, with_tail=False)
