"""Test helper: build a small network PKI on disk for the crypto tests."""

from __future__ import annotations

from pathlib import Path

from crypto.pki import InstitutionEntry, PkiLayout, init_pki

INSTITUTION = "1131105000000000"
OTHER_INSTITUTION = "2131105000000000"
BACK_OFFICE_SYSTEM = "juki"

INSTITUTIONS = (
    InstitutionEntry(INSTITUTION, (BACK_OFFICE_SYSTEM, "zeimu")),
    InstitutionEntry(OTHER_INSTITUTION, ()),
)


def make_pki(directory: Path) -> PkiLayout:
    """Create the test PKI (hub, two institutions, two back-office systems) in `directory`."""
    init_pki(directory, INSTITUTIONS)
    return PkiLayout(directory)
