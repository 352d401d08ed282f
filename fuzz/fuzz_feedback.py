"""Extra coverage features for the harnesses: what the C libraries did, which atheris cannot see.

atheris measures coverage of instrumented Python only. libxml2 (behind lxml) does most of the
work on an XML document and is not instrumented, so a document that reaches a new part of the
parser or of a schema looks like any other to libFuzzer. `Features` gives libFuzzer a signal
for that: a block of extra coverage counters, and `Features.hit` bumps the counter of a key
(a libxml2 error code, a normalized schema error, the shape of an accepted tree…), so that
an input with a new outcome is kept in the corpus like one that reaches a new Python branch.
Keys are hashed into the block, so their number stays bounded whatever the inputs.

Uses atheris's counter primitives (``atheris._reserve_counter``, ``atheris._trace_branch``,
what its bytecode instrumentation calls); the counters must be reserved before
``atheris.Fuzz``. The ``cov:`` figure libFuzzer prints counts these counters too.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import atheris
from lxml import etree

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_WORD = re.compile(r"[A-Za-z']+")
_PLAIN = re.compile(r"[A-Z]?[a-z']{2,12}")
_SCHEMA_SUBJECT = re.compile(r"Element '([^']*)'(?:, attribute '([^']*)')?")
_XS = "{http://www.w3.org/2001/XMLSchema}"


class Features:
    """A block of ``size`` extra coverage counters, hit by key.

    ``names`` are the element and attribute names worth telling apart (a schema's); any other
    name, and any quoted value, is left out of a key.
    """

    def __init__(self, size: int = 4096, names: Iterable[str] = ()) -> None:
        self.base = atheris._reserve_counter()  # private: atheris's counter primitives
        for _ in range(size - 1):
            atheris._reserve_counter()  # private: atheris's counter primitives
        self.size = size
        self.names = frozenset(names)

    def hit(self, *key: object) -> None:
        """Bump the counter of ``key`` (the same key always bumps the same counter)."""
        counter = self.base + zlib.crc32(repr(key).encode()) % self.size
        atheris._trace_branch(counter)  # private: atheris's counter primitives

    def name(self, qualified: str) -> str:
        """``qualified``'s local name if it is one of ``names``, else ``"?"``."""
        local = qualified.rpartition("}")[2]
        return local if local in self.names else "?"

    def normalized(self, detail: str) -> str:
        """What kind of error a detail tells: its first four plain words, leaving out what it
        quotes (values, names), the numbers it cites and the names it gives unquoted."""
        words = _WORD.findall(_QUOTED.sub(" ", detail))
        return " ".join(
            [word for word in words if word in self.names or _PLAIN.fullmatch(word)][:4]
        )

    def refusal(self, error: BaseException, *context: object) -> None:
        """Features of a refusal: its code and libxml2's error number behind it (for a
        well-formedness error raised straight from the parser), or its code with ``context``
        (e.g. the message type) and, for a code of ours, its `normalized` detail. For a
        schema error, `schema` tells more."""
        code = getattr(error, "code", type(error).__name__)
        cause = error.__context__
        if isinstance(cause, etree.XMLSyntaxError):
            self.hit("syntax", code, getattr(cause, "code", 0))  # the same parser everywhere
            return
        if code.startswith("Xml"):  # a parser's message may quote anything from the document
            self.hit("refusal", *context, code)
            return
        detail = str(getattr(error, "params", {}).get("detail", ""))
        self.hit("refusal", *context, code, self.normalized(detail))

    def schema(self, schema: etree.XMLSchema, root: etree._Element, *context: object) -> bool:
        """Validate ``root``; if invalid, the features of its first error (libxml2's error
        number, the element and attribute it names, its depth) and True."""
        if schema.validate(root):
            return False
        entry = cast(Any, schema.error_log)[0]
        subject = _SCHEMA_SUBJECT.match(entry.message)
        element, attribute = subject.groups("") if subject else ("", "")
        depth = min(str(entry.path).count("/"), 40)
        self.hit("schema", *context, entry.type, self.name(element), self.name(attribute), depth)
        return True

    def tree(self, root: etree._Element, *context: object) -> None:
        """Features of an accepted tree: node kinds by depth, names, attributes, text."""
        docinfo = root.getroottree().docinfo
        version = docinfo.xml_version if docinfo.xml_version in ("1.0", "1.1") else "other"
        self.hit("document", *context, docinfo.encoding, version, docinfo.standalone)
        for node, level in _walk(root):
            self.hit("node", *context, type(node).__name__, min(level, 40))
            if not isinstance(node.tag, str):
                continue
            self.hit("element", *context, self.name(node.tag), min(level, 40))
            namespaces = min(len(node.nsmap), 4)
            self.hit("content", *context, bool(node.text), bool(node.tail), namespaces)
            for attribute in node.attrib:
                name = attribute if isinstance(attribute, str) else attribute.decode()
                self.hit("attribute", *context, self.name(name), "}" in name)


def schema_names(*schemas: Path) -> set[str]:
    """The element and attribute names declared in these XML schemas (and their includes)."""
    names: set[str] = set()
    pending = list(schemas)
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = etree.parse(str(path))
        for declaration in tree.iter(f"{_XS}element", f"{_XS}attribute"):
            if declaration.get("name"):
                names.add(declaration.get("name", ""))
        for include in tree.iter(f"{_XS}include"):
            pending.append(path.with_name(include.get("schemaLocation", "")))
    return names


def _walk(root: etree._Element) -> Iterator[tuple[etree._Element, int]]:
    stack = [(root, 1)]
    while stack:
        node, level = stack.pop()
        yield node, level
        stack.extend((child, level + 1) for child in node)
