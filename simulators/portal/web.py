"""マイナポータル's web pages: Klein and Jinja2, server-rendered, in Japanese, no JavaScript.

A person signs in as one of the portal's demo residents (the emulated card), then sees what
the portal asks the network for them. Every page of a signed-in person goes through `page`
(one place for the session and, on POST, the CSRF token); the session token travels in a
Secure, HTTP-only, SameSite=Strict cookie. Coded errors are rendered as a page with the code,
the Japanese message and the error's HTTP status. Times are shown in Japan time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from adapters.console.app import japan_time
from adapters.listening import Listener, text_refusal
from adapters.payload_view import describe_payload, payload_attachments
from codes import errors
from codes.errors import ErrorKind, RenkeiError
from codes.institution import validate_institution_code
from codes.typed import validate_information_name_code
from crypto.pki import PkiLayout
from crypto.tls import server_only_options
from simulators.portal import accounts
from simulators.portal.accounts import Session
from simulators.portal.portal import Portal

__all__ = [
    "EVENTS",
    "MAX_FORM_BODY",
    "OUTCOMES",
    "PAGE_HEADERS",
    "REFRESH",
    "SESSION_COOKIE",
    "STATES",
    "PortalWeb",
    "page",
    "portal_web_listener",
    "reason_ja",
]

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = b"myna_portal"
MAX_FORM_BODY = 65_536  # a page's forms are a few fields
# Sent with every answer (a page sets its own only where it differs: the stylesheet may be
# cached): HTTPS only, no address leaked to another site, no framing, no sniffing, no script.
PAGE_HEADERS = (
    (b"Strict-Transport-Security", b"max-age=31536000"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
    (b"X-Frame-Options", b"DENY"),
    (b"X-Content-Type-Options", b"nosniff"),
    (
        b"Content-Security-Policy",
        b"default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
    ),
)

Handler = Callable[..., Awaitable[Any]]

# What a person reads of the state of a request for their own information.
STATES = {
    "submitted": "送信中",
    "accepted": "照会中",
    "held": "保留中(提供機関の職員が確認しています)",
    "provided": "提供されました",
    "no_data": "該当する情報はありません",
    "refused": "提供されませんでした",
    "error": "エラー",
}
# What a person reads of a provision record's event and status.
EVENTS = {
    "query": "照会",
    "result": "照会結果の受領",
    "provision": "提供",
    "result_deleted": "照会結果の削除",
}
OUTCOMES = {
    "permitted": "許可",
    "submitted": "送信",
    "accepted": "受付",
    "delivered": "提供機関へ送付",
    "held": "保留",
    "provided": "提供",
    "no_data": "該当なし",
    "refused": "不可",
    "error": "エラー",
    "deleted": "削除",
}
# Seconds between two loads of a page that waits for an answer (a meta refresh: no script).
REFRESH = 3


def reason_ja(error_code: str | None, **values: Any) -> str:
    """The Japanese message of an error code from any party (a code unknown here shows as
    itself)."""
    if error_code is None:
        return ""
    kind = errors.ALL.get(error_code, ErrorKind(error_code, 0, error_code, error_code))
    return RenkeiError(kind, **values).message_ja


def _arg(request: Request, name: str) -> str:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if not values:
        return ""
    return str(values[0].decode("utf-8", "replace")).strip()


def _token(request: Request) -> str | None:
    value = request.getCookie(SESSION_COOKIE)
    return value.decode("ascii", "replace") if value else None


def _session_cookie(request: Request, token: str | None) -> None:
    """Give the browser the session's cookie (HTTPS only, no script may read it, never sent
    from another site), or with no token take it back."""
    extra: dict[str, Any] = {} if token is not None else {"max_age": b"0"}
    request.addCookie(
        SESSION_COOKIE,
        (token or "").encode("ascii"),
        path=b"/",
        secure=True,
        httpOnly=True,
        sameSite=b"strict",
        **extra,
    )


def page(method: str = "GET") -> Callable[[Handler], Callable[..., Deferred[Any]]]:
    """A page of a signed-in person: their session, and on POST the form's CSRF token. The
    handler is called as ``handler(self, request, session, **kwargs)``."""

    def decorate(handler: Handler) -> Callable[..., Deferred[Any]]:
        @wraps(handler)
        def route(instance: PortalWeb, request: Request, **kwargs: Any) -> Deferred[Any]:
            async def run() -> Any:
                session = await instance.portal.resume(_token(request))
                if method == "POST":
                    accounts.check_csrf(session, _arg(request, "csrf_token") or None)
                return await handler(instance, request, session, **kwargs)

            return ensureDeferred(run())

        return route

    return decorate


class PortalWeb:
    """The web pages of one マイナポータル."""

    app = Klein()
    log = Logger()

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # -- plumbing --------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None = None,
        status: int = 200,
        **values: Any,
    ) -> bytes:
        """A page of ``template`` with what every page shows."""
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        page = self.templates.get_template(template).render(
            session=session,
            csrf=session.csrf_token if session else "",
            portal=self.portal.settings,
            path=request.path.decode("utf-8", "replace"),
            japan_time=japan_time,
            institution_name=self.portal.institution_name,
            information_name=self._information_name,
            affair_name=self._affair_name,
            states=STATES,
            events=EVENTS,
            outcomes=OUTCOMES,
            **values,
        )
        return page.encode("utf-8")

    def _information_name(self, code: str) -> str:
        try:
            return self.portal.catalogue.information_name(code).name
        except RenkeiError:
            return code

    def _affair_name(self, affair: str | None, procedure: str | None) -> str:
        """The name of a 事務 (and of its procedure) as the catalogue gives it."""
        if procedure is not None:
            try:
                found = self.portal.catalogue.procedure(procedure)
                return f"{found.affair_name}({found.name})"
            except RenkeiError:
                pass
        for known in self.portal.catalogue.procedures:
            if known.affair == affair:
                return known.affair_name
        return affair or ""

    @app.handle_errors(Exception)
    def refusal(self, request: Request, failure: Failure) -> bytes:
        """Every refusal as a page: its code, its Japanese message and its HTTP status (an
        unknown address is PageNotFound, anything unexpected Internal, logged)."""
        error = failure.value
        if isinstance(error, NotFound | MethodNotAllowed):
            error = RenkeiError(errors.PAGE_NOT_FOUND)
        elif not isinstance(error, RenkeiError):
            self.log.failure("portal page error", failure)
            error = RenkeiError(errors.INTERNAL)
        return self.render(
            request,
            "error.html",
            status=error.status,
            error=error,
            sign_in_again=error.code == errors.SESSION_EXPIRED.code,
        )

    @app.route("/static/portal.css")
    def stylesheet(self, request: Request) -> bytes:
        """The pages' one stylesheet (cached for an hour)."""
        request.setHeader(b"Content-Type", b"text/css; charset=utf-8")
        request.setHeader(b"Cache-Control", b"max-age=3600")
        return (HERE / "static" / "portal.css").read_bytes()

    # -- signing in and out -------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    async def home(self, request: Request) -> bytes:
        """The person's menu once signed in; the sign-in page before."""
        try:
            session = await self.portal.resume(_token(request))
        except RenkeiError:
            return self.render(request, "sign_in.html", residents=self.portal.residents)
        unread = await self.portal.notices.unread(session.fugo)
        return self.render(request, "home.html", session, unread=unread)

    @app.route("/sign-in", methods=["POST"])
    async def sign_in(self, request: Request) -> bytes:
        """Sign in as a demo resident (the emulated card): a session, then the menu."""
        try:
            token = await self.portal.sign_in(_arg(request, "individual_number"))
        except RenkeiError as refusal:
            return self.render(
                request,
                "sign_in.html",
                status=refusal.status,
                residents=self.portal.residents,
                error=refusal,
            )
        _session_cookie(request, token)
        request.redirect(b"/")
        return b""

    @app.route("/sign-out", methods=["POST"])
    @page(method="POST")
    async def sign_out(self, request: Request, session: Session) -> bytes:
        token = _token(request)
        if token is not None:
            await self.portal.sign_out(token)
        _session_cookie(request, None)
        request.redirect(b"/")
        return b""

    # -- 自己情報提供: a person's own information --------------------------------------------

    @app.route("/self-information", methods=["GET"])
    @page()
    async def self_information(self, request: Request, session: Session) -> bytes:
        """What the person may ask for, and what they asked."""
        asked = await self.portal.self_information.requests_of(session.fugo)
        return self.render(
            request,
            "self_information.html",
            session,
            offers=self.portal.offers(),
            asked=asked,
        )

    @app.route("/self-information", methods=["POST"])
    @page(method="POST")
    async def ask_self_information(self, request: Request, session: Session) -> bytes:
        """Ask an institution for one's own information of an information name."""
        provider, _, name = _arg(request, "asked").partition(":")
        request_id = await self.portal.self_information.ask(
            session.fugo,
            validate_institution_code(provider),
            validate_information_name_code(name),
        )
        request.redirect(f"/self-information/{request_id}".encode())
        return b""

    @app.route("/self-information/<request_id>", methods=["GET"])
    @page()
    async def self_information_result(
        self, request: Request, session: Session, request_id: str
    ) -> bytes:
        """One request: its state and, once provided, the information with the names of its
        codes and the files that came with it."""
        asked = await self.portal.self_information.request(session.fugo, request_id)
        content = None
        files: tuple[Any, ...] = ()
        if asked.result is not None:
            content = describe_payload(self.portal.catalogue, asked.result)
            files = payload_attachments(asked.result)
        return self.render(
            request,
            "self_information_result.html",
            session,
            asked=asked,
            content=content,
            files=files,
            refresh=REFRESH if asked.state in ("submitted", "accepted") else None,
            reason=reason_ja(
                asked.error_code,
                transaction_number=asked.transaction_number,
                code=asked.information_name,
                procedure="自己情報提供",
                sender=asked.provider,
                caller=self.portal.code,
            ),
        )

    @app.route("/self-information/<request_id>/files/<int:index>", methods=["GET"])
    @page()
    async def self_information_file(
        self, request: Request, session: Session, request_id: str, index: int
    ) -> bytes:
        """A file that came with the person's own information, to save."""
        asked = await self.portal.self_information.request(session.fugo, request_id)
        files = payload_attachments(asked.result) if asked.result is not None else ()
        if not 0 <= index < len(files):
            raise RenkeiError(errors.PAGE_NOT_FOUND)
        return _download(request, files[index])

    # -- 情報提供等記録: who exchanged the person's information --------------------------------

    @app.route("/records", methods=["GET"])
    @page()
    async def records(self, request: Request, session: Session) -> bytes:
        """The person's provision records at the hub and at each institution, without those
        marked 不開示; times in Japan time."""
        parties = await self.portal.disclosure.records_of(session.fugo)
        return self.render(
            request,
            "records.html",
            session,
            parties=parties,
            reason=lambda code: reason_ja(code),
        )

    # -- お知らせ: the notices sent to the person ---------------------------------------------

    @app.route("/notices", methods=["GET"])
    @page()
    async def notices(self, request: Request, session: Session) -> bytes:
        """The person's notices, newest first, the unread ones marked."""
        found = await self.portal.notices.notices_of(session.fugo)
        return self.render(request, "notices.html", session, notices=found)

    @app.route("/notices/<number>", methods=["GET"])
    @page()
    async def notice(self, request: Request, session: Session, number: str) -> bytes:
        """One notice, opened: marked read (the sender learns it through the network)."""
        found = await self.portal.notices.read(session.fugo, number)
        return self.render(request, "notice.html", session, notice=found)

    @app.route("/notices/<number>/files/<int:index>", methods=["GET"])
    @page()
    async def notice_file(
        self, request: Request, session: Session, number: str, index: int
    ) -> bytes:
        """A file attached to one of the person's notices, to save."""
        found = await self.portal.notices.read(session.fugo, number)
        if not 0 <= index < len(found.attachments):
            raise RenkeiError(errors.PAGE_NOT_FOUND)
        return _download(request, found.attachments[index])


def _download(request: Request, attachment: Any) -> bytes:
    """An attached file as a download: its media type, its name (RFC 6266, UTF-8)."""
    request.setHeader(b"Content-Type", attachment.media_type.encode("ascii"))
    request.setHeader(
        b"Content-Disposition",
        f"attachment; filename*=UTF-8''{quote(attachment.name, safe='')}".encode("ascii"),
    )
    return bytes(attachment.content)


def portal_web_listener(web: PortalWeb, reactor: Any) -> Listener:
    """The listener of マイナポータル's pages (``web_listen``): TLS with the portal's
    certificate (persons sign in on the page, without a client certificate), form bodies
    only, refusals in plain text."""
    portal = web.portal
    return Listener(
        reactor,
        portal.settings.web_listen,
        web.app.resource(),
        server_only_options(PkiLayout(portal.config.pki).portal_tls().load()),
        max_body=MAX_FORM_BODY,
        render_refusal=text_refusal,
        headers=PAGE_HEADERS,
    )
