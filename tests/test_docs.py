"""The documents say what the code does."""

from __future__ import annotations

from pathlib import Path

from codes import errors

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_protocol_document_lists_every_error_code_with_its_status() -> None:
    """Every published error code appears in docs/protocol.md with its HTTP status."""
    text = (DOCS / "protocol.md").read_text(encoding="utf-8")
    for kind in errors.ALL.values():
        assert f"| `{kind.code}` | {kind.status} |" in text, kind.code


def test_operations_document_describes_every_configuration_key() -> None:
    """Every key of the default twistd.conf is explained in docs/operations.md."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(Path(__file__).resolve().parent.parent / "twistd.conf", encoding="utf-8")
    text = (DOCS / "operations.md").read_text(encoding="utf-8")
    for section in parser.sections():
        for key in parser[section]:
            assert f"`{key}`" in text, f"[{section}] {key}"
