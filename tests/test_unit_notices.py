"""What a notice may be before it is sent (middleware/notices.py, validate_notice)."""

from __future__ import annotations

import pytest

from codes.errors import RenkeiError
from middleware.messages import Attachment
from middleware.notices import MAX_BODY, MAX_RECIPIENTS, MAX_TITLE, NoticeDraft, validate_notice


def _draft(**change: object) -> NoticeDraft:
    values: dict[str, object] = {
        "title": "介護保険料額決定のお知らせ",
        "body": "保険料の額が決まりました。\n\t詳しくは添付をご覧ください。",
        "recipients": ("000000000010001",),
    }
    values.update(change)
    return NoticeDraft(**values)  # type: ignore[arg-type]


def test_a_notice_within_its_limits_is_taken_as_it_is() -> None:
    """The longest title and body, the most persons and three files are taken."""
    draft = _draft(
        title="題" * MAX_TITLE,
        body="本" * MAX_BODY,
        recipients=tuple(f"{n:015d}" for n in range(MAX_RECIPIENTS)),
        attachments=(Attachment(name="a.txt", media_type="text/plain", content=b"a"),) * 3,
    )
    assert validate_notice(draft) is draft


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"title": ""}, "NoticeInvalid"),
        ({"title": "題" * (MAX_TITLE + 1)}, "NoticeInvalid"),
        ({"title": "二行の\n件名"}, "NoticeInvalid"),
        ({"body": ""}, "NoticeInvalid"),
        ({"body": "本" * (MAX_BODY + 1)}, "NoticeInvalid"),
        ({"body": "制御文字\x07"}, "NoticeInvalid"),
        ({"recipients": ()}, "NoticeInvalid"),
        ({"recipients": tuple(f"{n:015d}" for n in range(MAX_RECIPIENTS + 1))}, "NoticeInvalid"),
        ({"recipients": ("000000000010001", "000000000010001")}, "NoticeInvalid"),
        (
            {"attachments": (Attachment(name="a.exe", media_type="application/x", content=b"a"),)},
            "AttachmentInvalid",
        ),
    ],
)
def test_a_notice_that_cannot_be_sent_is_refused(change: dict[str, object], code: str) -> None:
    """A title not on one line or of the wrong length, a body XML cannot carry or too long,
    no person, too many or one twice, an attachment that cannot travel: refused with a code."""
    with pytest.raises(RenkeiError) as refused:
        validate_notice(_draft(**change))
    assert refused.value.code == code
