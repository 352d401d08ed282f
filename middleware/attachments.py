"""Attached files: 自己情報提供用添付ファイル at a node, and what every attachment must be.

A back-office system registers files for a person and an information name (a notice of a
decision, a statement); they are provided with the person's own information of that name
(自己情報提供), inside the signed and encrypted payload. Notices carry attachments of the
same kind. What an attachment may be is checked here once (`validate_attachment`): a name
of 1 to 100 characters without a path separator or a control character, one of a few media
types, 1 to `MAX_ATTACHMENT_BYTES` bytes, at most `MAX_ATTACHMENTS` together; the message
schemas say the same (common.xsd ``Attachment``). The limits are this emulation's: they keep
a payload with its attachments within a message's 1 MiB.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, func, select

from codes import errors
from codes.errors import RenkeiError
from middleware.messages import Attachment
from middleware.tables import self_information_attachment

__all__ = [
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_BYTES",
    "MEDIA_TYPES",
    "attachments_of",
    "decode_content",
    "delete_attachment",
    "store_attachment",
    "validate_attachment",
    "validate_attachments",
]

MAX_ATTACHMENT_BYTES = 131_072
MAX_ATTACHMENTS = 3
MEDIA_TYPES = ("application/pdf", "text/plain", "image/png", "image/jpeg")
_NAME = re.compile(r"[^/\\\x00-\x1f\x7f-\x9f]{1,100}")


def _invalid(detail: str) -> RenkeiError:
    return RenkeiError(errors.ATTACHMENT_INVALID, detail=detail)


def validate_attachment(attachment: Attachment) -> Attachment:
    """The attachment, when it may travel (AttachmentInvalid otherwise)."""
    if not isinstance(attachment.name, str) or not _NAME.fullmatch(attachment.name):
        raise _invalid(
            "a name is 1 to 100 characters without a path separator or a control character"
        )
    if attachment.media_type not in MEDIA_TYPES:
        raise _invalid(f"the media type must be one of {', '.join(MEDIA_TYPES)}")
    if not 1 <= len(attachment.content) <= MAX_ATTACHMENT_BYTES:
        raise _invalid(f"a file has 1 to {MAX_ATTACHMENT_BYTES} bytes")
    return attachment


def validate_attachments(attachments: Sequence[Attachment]) -> tuple[Attachment, ...]:
    """At most `MAX_ATTACHMENTS` attachments, each valid (AttachmentInvalid otherwise)."""
    if len(attachments) > MAX_ATTACHMENTS:
        raise _invalid(f"at most {MAX_ATTACHMENTS} files go together")
    return tuple(validate_attachment(attachment) for attachment in attachments)


def decode_content(text: object) -> bytes:
    """A file's content given in base64 (AttachmentInvalid when it is not)."""
    if not isinstance(text, str):
        raise _invalid("the content is a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("the content is not base64") from None


def store_attachment(
    connection: Connection,
    system: str,
    integrated_address_number: str,
    information_name: str,
    attachment: Attachment,
    now: datetime,
) -> str:
    """Keep a file for a person and an information name; its id. More than
    `MAX_ATTACHMENTS` for one person and name are refused (AttachmentInvalid)."""
    t = self_information_attachment.c
    held = connection.execute(
        select(func.count())
        .select_from(self_information_attachment)
        .where(
            t.integrated_address_number == integrated_address_number,
            t.information_name == information_name,
        )
    ).scalar_one()
    if held >= MAX_ATTACHMENTS:
        raise _invalid(
            f"a person has at most {MAX_ATTACHMENTS} files for one information name:"
            " delete one first"
        )
    attachment_id = str(uuid.uuid4())
    connection.execute(
        self_information_attachment.insert().values(
            attachment_id=attachment_id,
            system=system,
            integrated_address_number=integrated_address_number,
            information_name=information_name,
            name=attachment.name,
            media_type=attachment.media_type,
            content=attachment.content,
            registered_at=now,
        )
    )
    return attachment_id


def delete_attachment(connection: Connection, attachment_id: str, system: str) -> None:
    """Delete a file the system registered; any other is UnknownAttachment to it."""
    t = self_information_attachment.c
    deleted = connection.execute(
        delete(self_information_attachment).where(
            t.attachment_id == attachment_id, t.system == system
        )
    ).rowcount
    if not deleted:
        raise RenkeiError(errors.UNKNOWN_ATTACHMENT, attachment_id=attachment_id)


def attachments_of(
    connection: Connection, integrated_address_number: str, information_name: str
) -> tuple[Attachment, ...]:
    """The files of a person and an information name, oldest first."""
    t = self_information_attachment.c
    rows = connection.execute(
        select(t.name, t.media_type, t.content)
        .where(
            t.integrated_address_number == integrated_address_number,
            t.information_name == information_name,
        )
        .order_by(t.registered_at, t.attachment_id)
    )
    return tuple(
        Attachment(name=row.name, media_type=row.media_type, content=bytes(row.content))
        for row in rows
    )
