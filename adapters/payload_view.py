"""A provision payload as people and back offices read it: every code with its name.

The payload is the signed XML a provider sent (verified when it arrived); the view decodes
it and names its information name, data sets and items from the catalogue. The back-office
API returns it as a query's ``result``; the console shows it for a held provision;
マイナポータル shows a person their own information with it, and the files that come with
it (`payload_attachments`).
"""

from __future__ import annotations

from typing import Any

from codes.catalogue import Catalogue
from middleware import messages
from middleware.hardened_xml import parse_xml

__all__ = ["describe_payload", "payload_attachments"]


def describe_payload(catalogue: Catalogue, plaintext: bytes) -> dict[str, Any]:
    """A verified payload with names from the catalogue (JSON-ready)."""
    payload = messages.from_element(parse_xml(plaintext), messages.ProvisionPayload)
    information = catalogue.information_name(payload.information_name)
    records = []
    for record in payload.records:
        data_set = information.data_set(record.data_set)
        records.append(
            {
                "record_id": record.record_id,
                "data_set": {"code": data_set.code, "name": data_set.name},
                "items": [
                    {"code": code, "name": data_set.item(code).name, "value": value}
                    for code, value in record.items
                ],
            }
        )
    return {
        "information_name": {"code": information.code, "name": information.name},
        "provider": payload.provider,
        "created_at": payload.created_at.isoformat(),
        "records": records,
    }


def payload_attachments(plaintext: bytes) -> tuple[messages.Attachment, ...]:
    """The files a verified payload carries (a person's own information may have some)."""
    return messages.from_element(parse_xml(plaintext), messages.ProvisionPayload).attachments
