"""What an attached file may be (middleware/attachments.py): the name, the media type, the
size and how many go together."""

from __future__ import annotations

import pytest

from codes.errors import RenkeiError
from middleware.attachments import (
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    decode_content,
    validate_attachment,
    validate_attachments,
)
from middleware.messages import Attachment


def _file(**change: object) -> Attachment:
    values: dict[str, object] = {"name": "通知書.pdf", "media_type": "application/pdf"}
    values["content"] = b"%PDF-1.7"
    values.update(change)
    return Attachment(**values)  # type: ignore[arg-type]


def test_a_file_of_a_known_type_within_the_size_is_taken() -> None:
    """A PDF with a Japanese name is taken as it is, and so is one of the largest size."""
    assert validate_attachment(_file()) == _file()
    largest = _file(content=b"x" * MAX_ATTACHMENT_BYTES)
    assert validate_attachment(largest) == largest


@pytest.mark.parametrize(
    "change",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "dir/a.pdf"},
        {"name": "dir\\a.pdf"},
        {"name": "a\nb.pdf"},
        {"media_type": "text/html"},
        {"content": b""},
        {"content": b"x" * (MAX_ATTACHMENT_BYTES + 1)},
    ],
)
def test_a_file_that_cannot_travel_is_refused(change: dict[str, object]) -> None:
    """A name with a path separator or a control character, empty or too long, another media
    type, an empty or too large file: AttachmentInvalid."""
    with pytest.raises(RenkeiError) as refused:
        validate_attachment(_file(**change))
    assert refused.value.code == "AttachmentInvalid"


def test_at_most_three_files_go_together() -> None:
    """Three files are taken together, four are refused."""
    assert len(validate_attachments([_file()] * MAX_ATTACHMENTS)) == MAX_ATTACHMENTS
    with pytest.raises(RenkeiError) as refused:
        validate_attachments([_file()] * (MAX_ATTACHMENTS + 1))
    assert refused.value.code == "AttachmentInvalid"


def test_content_is_strict_base64() -> None:
    """Content is base64 text; anything else is AttachmentInvalid."""
    assert decode_content("JVBERg==") == b"%PDF"
    for bad in ("not base64!", 12, None):
        with pytest.raises(RenkeiError) as refused:
            decode_content(bad)
        assert refused.value.code == "AttachmentInvalid"
