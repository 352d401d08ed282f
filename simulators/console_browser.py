"""A staff member's browser on an institution's operator console (adapters/console/).

`Browser` is what any person's browser does on a site of the box (マイナポータル's pages
use it too, `simulators.portal.person_browser`); `ConsoleBrowser` adds the console's login.

`ConsoleBrowser` does what a person's browser does, over the console's HTTPS (the network
CA trusted, no client certificate): it keeps the session cookie, opens pages, follows
redirects, and submits the forms of the page it shows with their hidden fields (the CSRF
token among them). A person logs in on the login form with their password and the code of
their authenticator (`Authenticator`: the project's TOTP, ``middleware.staff.totp_code``).

It reads pages by what the console marks for machines, never by their wording: form actions,
input names, and the ``data-error-code`` attribute of the element showing a coded error
(docs/operations.md, "Console pages"). What it reads of a page is a `ConsolePage`.

For scenarios and tests that need to do what a browser would refuse (a form without its
CSRF token, a form the page does not offer), `submit` can drop or spoil the token and `post`
sends a form of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from twisted.web.http_headers import Headers

from adapters.network_link import host_and_port
from crypto.pki import PkiLayout, load_certificate, server_name_of_institution
from crypto.tls import ClientTLSPolicy, make_http_client
from middleware.config import Config, InstitutionConfig
from middleware.deferred import deferred
from middleware.staff import TOTP_INTERVAL, TOTP_VALID_WINDOW, totp_code, totp_counter

__all__ = [
    "CSRF_FIELD",
    "Authenticator",
    "Browser",
    "ConsoleBrowser",
    "ConsolePage",
    "Form",
    "NoFreshCode",
    "NoSuchForm",
    "read_page",
]

CSRF_FIELD = "csrf_token"
SESSION_COOKIE = "renkei_console"
MAX_REDIRECTS = 5


class NoSuchForm(LookupError):
    """The page shown offers no form with that action."""


class NoFreshCode(LookupError):
    """Every code the authenticator could show has been used: a person waits for the next."""


@dataclass(frozen=True)
class Form:
    """One form of a page: where it goes, how, and its fields as the page fills them in
    (checked boxes and selected options only; a field may appear more than once)."""

    action: str
    method: str
    fields: tuple[tuple[str, str], ...]

    def value(self, name: str) -> str | None:
        """The first value of field ``name``, if the form has one."""
        return next((value for key, value in self.fields if key == name), None)


@dataclass(frozen=True)
class ConsolePage:
    """What the browser shows: the HTTP status and path of the page (after redirects), its
    HTML, its visible text, its forms, and the coded error it shows (``data-error-code``),
    if any."""

    status: int
    path: str
    html: str
    text: str
    forms: tuple[Form, ...]
    error_code: str | None

    def form(self, action: str) -> Form | None:
        """The form that goes to ``action`` (a path), if the page offers one."""
        return next((form for form in self.forms if form.action == action), None)

    def shows(self, text: str) -> bool:
        """Whether ``text`` is among what the page shows (its visible text, whitespace
        runs read as one space)."""
        return " ".join(text.split()) in self.text


class _PageReader(HTMLParser):
    """The forms, the visible text and the ``data-error-code`` of one HTML page."""

    HIDDEN = frozenset({"head", "script", "style", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self.error_code: str | None = None
        self._text: list[str] = []
        self._hidden = 0
        self._form: dict[str, Any] | None = None
        self._select: str | None = None
        self._option_text = False
        self._textarea: str | None = None

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if "data-error-code" in attributes and self.error_code is None:
            self.error_code = attributes["data-error-code"]
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag == "form":
            self._form = {
                "action": attributes.get("action", ""),
                "method": attributes.get("method", "get").upper(),
                "fields": [],
            }
        elif self._form is not None and "name" in attributes:
            self._field(tag, attributes)
        elif tag == "option" and self._select is not None and "selected" in attributes:
            if "value" in attributes:
                self._add(self._select, attributes["value"])
            else:
                self._option_text = True  # its text is its value

    def _field(self, tag: str, attributes: dict[str, str]) -> None:
        assert self._form is not None
        name = attributes["name"]
        if tag == "input":
            kind = attributes.get("type", "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in attributes:
                return
            if kind in ("submit", "button", "image", "reset", "file"):
                return
            self._add(name, attributes.get("value", ""))
        elif tag == "select":
            self._select = name
        elif tag == "textarea":
            self._textarea = name
            self._add(name, "")

    def _add(self, name: str, value: str) -> None:
        if self._form is not None:
            self._form["fields"].append((name, value))

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag == "form" and self._form is not None:
            self.forms.append(
                Form(self._form["action"], self._form["method"], tuple(self._form["fields"]))
            )
            self._form = None
        elif tag == "select":
            self._select = None
            self._option_text = False
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._option_text and self._select is not None:
            self._add(self._select, data.strip())
            self._option_text = False
        if self._textarea is not None and self._form is not None and self._form["fields"]:
            name, text = self._form["fields"][-1]
            self._form["fields"][-1] = (name, text + data)
        if not self._hidden:
            self._text.append(data)


def read_page(status: int, path: str, html: str) -> ConsolePage:
    """What a browser makes of the console's answer ``html`` at ``path``."""
    reader = _PageReader()
    reader.feed(html)
    reader.close()
    return ConsolePage(status, path, html, reader.text, tuple(reader.forms), reader.error_code)


class Authenticator:
    """A staff member's authenticator app: the TOTP code of the time it is asked at.

    A code logs in once (the console refuses one it accepted before, and accepts codes one
    time step either side of its own clock): asked again after a code of this time step was
    accepted, the authenticator gives the next step's code, as a person waiting a few
    seconds would; beyond that, `NoFreshCode`.
    """

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._given: int | None = None  # the time step of the last code given
        self._accepted: int | None = None  # the time step of the last code accepted

    def code(self, now: datetime) -> str:
        """A code the console has not accepted yet, at ``now``."""
        current = totp_counter(now)
        step = current if self._accepted is None else max(current, self._accepted + 1)
        if step > current + TOTP_VALID_WINDOW:
            raise NoFreshCode("every one-time code of this time has been used")
        self._given = step
        return totp_code(self._secret, now + timedelta(seconds=TOTP_INTERVAL * (step - current)))

    def accepted(self) -> None:
        """The last code given logged in: it cannot log in again."""
        self._accepted = self._given

    def wrong_code(self, now: datetime) -> str:
        """A six-digit code the console cannot accept at ``now`` (none of its window's)."""
        valid = {
            totp_code(self._secret, now + timedelta(seconds=TOTP_INTERVAL * offset))
            for offset in range(-TOTP_VALID_WINDOW, TOTP_VALID_WINDOW + 1)
        }
        return next(f"{n:06d}" for n in range(0, 1_000_000, 7919) if f"{n:06d}" not in valid)


@dataclass
class _Cookies:
    values: dict[str, str] = field(default_factory=dict)

    def take(self, headers: Iterable[bytes]) -> None:
        """Keep (or forget, when they expire now) the cookies an answer sets."""
        for raw in headers:
            first, *attributes = raw.decode("latin-1").split(";")
            name, _, value = first.strip().partition("=")
            expired = any(
                attribute.strip().lower() in ("max-age=0", "max-age=-1") for attribute in attributes
            )
            if expired or not value:
                self.values.pop(name, None)
            else:
                self.values[name] = value

    def header(self) -> bytes:
        return "; ".join(f"{k}={v}" for k, v in self.values.items()).encode("latin-1")


class Browser:
    """A person's browser on one site of the network in a box (its ``address``, HTTPS with a
    certificate of ``config``'s network CA valid for ``server_name``): it keeps the cookies
    the site sets, opens pages, follows redirects and submits the forms of the page shown.
    `ConsoleBrowser` is a staff member's on a console; マイナポータル's persons use one too."""

    session_cookie = ""  # the name of the site's session cookie

    def __init__(self, reactor: Any, config: Config, address: str, server_name: str) -> None:
        policy = ClientTLSPolicy(
            [load_certificate(PkiLayout(config.pki).ca().certificate)], credentials=None
        )
        host, port = host_and_port(address)
        policy.expect(host, port, server_name)
        self.address = address.rstrip("/")
        self._http = make_http_client(reactor, policy, max_per_host=2)
        self._cookies = _Cookies()
        self.page: ConsolePage | None = None  # the page shown, if any yet
        self._csrf = ""  # the session's CSRF token, as the last page carrying it had it

    def close(self) -> Any:
        return self._http.close()

    @property
    def has_session(self) -> bool:
        """Whether the browser holds a session cookie (it may have expired at the site)."""
        return self.session_cookie in self._cookies.values

    @property
    def csrf_token(self) -> str:
        """The session's CSRF token, as the last page that carried one had it ("" when none
        has yet)."""
        return self._csrf

    @deferred
    async def open(self, path: str) -> ConsolePage:
        """Open the page at ``path`` (following redirects): what it shows."""
        return await self._go("GET", path, None)

    @deferred
    async def submit(
        self,
        action: str,
        fields: Mapping[str, str | Sequence[str]] | None = None,
        csrf: str = "form",
    ) -> ConsolePage:
        """Submit the form of the page shown that goes to ``action``, its fields as the page
        filled them in and ``fields`` typed in (a list for a group of boxes); with ``csrf``
        "missing" without its CSRF token, "wrong" with another. `NoSuchForm` when the page
        offers none."""
        form = self.page.form(action) if self.page is not None else None
        if form is None:
            shown = self.page.path if self.page is not None else "no page"
            raise NoSuchForm(f"the page shown ({shown}) has no form to {action}")
        return await self.submit_form(form, fields, csrf)

    @deferred
    async def submit_form(
        self,
        form: Form,
        fields: Mapping[str, str | Sequence[str]] | None = None,
        csrf: str = "form",
    ) -> ConsolePage:
        """Submit ``form`` (one of the page shown's, when several go to one action), as
        `submit` does."""
        given = dict(fields or {})
        values = [(k, v) for k, v in form.fields if k not in given]
        for name, value in given.items():
            values += [(name, item) for item in ([value] if isinstance(value, str) else value)]
        if csrf == "missing":
            values = [(k, v) for k, v in values if k != CSRF_FIELD]
        elif csrf == "wrong":
            values = [(k, v) for k, v in values if k != CSRF_FIELD]
            values.append((CSRF_FIELD, "not-the-session-token"))
        elif csrf != "form":
            raise ValueError(f"csrf must be form, missing or wrong, not {csrf!r}")
        if form.method == "GET":
            return await self._go("GET", f"{form.action}?{urlencode(values)}", None)
        return await self._go("POST", form.action, values)

    @deferred
    async def post(
        self, path: str, fields: Mapping[str, str | Sequence[str]] | None = None
    ) -> ConsolePage:
        """POST a form the page does not offer (made up, as a crafted request would be),
        with the session's CSRF token."""
        values = [(CSRF_FIELD, self.csrf_token)]
        for name, value in (fields or {}).items():
            values += [(name, item) for item in ([value] if isinstance(value, str) else value)]
        return await self._go("POST", path, values)

    @deferred
    async def fetch(self, path: str) -> tuple[int, str, bytes]:
        """GET ``path`` as a download (no redirect followed): its status, content type and
        bytes."""
        headers = Headers()
        if self._cookies.values:
            headers.setRawHeaders(b"Cookie", [self._cookies.header()])
        response = await self._http.request(
            "GET", self.address + path, headers=headers, allow_redirects=False
        )
        body = await response.content()
        content_type = response.headers.getRawHeaders(b"content-type", [b""])[0].decode()
        return response.code, content_type, body

    async def _go(self, method: str, path: str, form: list[tuple[str, str]] | None) -> ConsolePage:
        for _ in range(MAX_REDIRECTS + 1):
            headers = Headers()
            if self._cookies.values:
                headers.setRawHeaders(b"Cookie", [self._cookies.header()])
            data = None
            if form is not None:
                headers.setRawHeaders(b"Content-Type", [b"application/x-www-form-urlencoded"])
                data = urlencode(form).encode("utf-8")
            response = await self._http.request(
                method, self.address + path, data=data, headers=headers, allow_redirects=False
            )
            body = (await response.content()).decode("utf-8", "replace")
            self._cookies.take(response.headers.getRawHeaders(b"set-cookie", []))
            location = response.headers.getRawHeaders(b"location", [b""])[0].decode()
            if response.code in (301, 302, 303, 307, 308) and location:
                target = urlsplit(urljoin(self.address + path, location))
                path = target.path + (f"?{target.query}" if target.query else "")
                method, form = "GET", None
                continue
            self.page = read_page(response.code, path, body)
            token = next((t for form in self.page.forms if (t := form.value(CSRF_FIELD))), "")
            self._csrf = token or self._csrf
            return self.page
        raise RuntimeError(f"more than {MAX_REDIRECTS} redirects from {path}")


class ConsoleBrowser(Browser):
    """One staff member's browser on ``institution``'s console (its ``console_address``),
    trusting the network CA of ``config``'s PKI. ``now`` is the time of the person's
    authenticator (the network's clock)."""

    session_cookie = SESSION_COOKIE

    def __init__(
        self,
        reactor: Any,
        config: Config,
        institution: InstitutionConfig,
        now: Callable[[], datetime],
    ) -> None:
        if institution.console_address is None:
            raise LookupError(f"{institution.name} has no console (console_address)")
        super().__init__(
            reactor,
            config,
            institution.console_address,
            server_name_of_institution(institution.code),
        )
        self._now = now

    @deferred
    async def login(
        self, name: str, password: str, authenticator: Authenticator | None, totp: str = "fresh"
    ) -> ConsolePage:
        """Open the login page and log in as ``name`` with ``password`` and, with ``totp``
        "fresh", the authenticator's code ("wrong": a code that is not; "none": no code)."""
        await self.open("/login")
        now = self._now()
        code = ""
        if authenticator is not None and totp == "fresh":
            code = authenticator.code(now)
        elif authenticator is not None and totp == "wrong":
            code = authenticator.wrong_code(now)
        self._csrf = ""
        page = await self.submit("/login", {"name": name, "password": password, "totp": code})
        if authenticator is not None and totp == "fresh" and page.error_code is None:
            authenticator.accepted()
        return page

    @deferred
    async def logout(self) -> ConsolePage:
        """Log out with the form every page offers a logged-in person."""
        page = await self.submit("/logout")
        if page.error_code is None:
            self._csrf = ""
        return page
