"""The Content-Type parse of twisted.web, cached (`adapters.listening.parse_content_type`)."""

from __future__ import annotations

from email.message import EmailMessage

from twisted.web import http

from adapters.listening import parse_content_type


def _email_parse(line: bytes) -> bytes:
    """What twisted.web's parser answers: the email package's content type."""
    message = EmailMessage()
    message["content-type"] = line.decode("charmap")
    return message.get_content_type().encode("charmap")


def test_the_cached_parse_answers_as_the_email_package() -> None:
    """Every header, short or long, well-formed or not, gives the email package's answer,
    the first time and from the cache."""
    lines = [
        b"application/xml",
        b"application/xml; charset=utf-8",
        b"Application/X-WWW-Form-URLencoded",
        b"multipart/form-data; boundary=----x",
        b"text/plain; charset=" + b"x" * 300,
        b"nonsense",
        b"",
    ]
    for _ in range(2):
        for line in lines:
            assert parse_content_type(line) == _email_parse(line), line


def test_twisted_web_uses_the_cached_parse() -> None:
    """Once the listeners are imported, twisted.web's requests parse with it."""
    assert http._parseContentType is parse_content_type  # private: the parse it replaces
