"""The operator console: a Klein app over HTTPS for an institution's staff.

Every page goes through ``Console.page`` (one place for the session, the role check and, on
POST, the CSRF token). Staff log in with name, password and TOTP code
(``middleware.staff.authenticate``); the session token travels in a Secure, HTTP-only,
SameSite=Strict cookie. Coded errors (``RenkeiError``) are rendered as a page with the code,
both messages and the error's HTTP status. Core actions are plain HTML forms: no JavaScript.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.ssl import CertificateOptions
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import NotFound

from adapters.console.i18n import LANGUAGES, WORDS, translator
from adapters.console.naming import (
    JST,
    Naming,
    japan_date,
    japan_month,
    japan_time,
)
from adapters.console.statistics import (
    GROUPINGS,
    Names,
    Period,
    SideTable,
    month_label,
    period_of,
    side_tables,
    statistics_csv,
)
from adapters.listening import Listener, text_refusal
from adapters.payload_view import describe_payload, payload_attachments
from codes import errors
from codes.catalogue import SELF_INFORMATION_PROCEDURE
from codes.errors import RenkeiError
from crypto.pki import PkiLayout
from crypto.tls import server_only_options
from middleware import audit, staff
from middleware.held_queue import HELD, HeldItem
from middleware.jobs import JobHistory, JobState
from middleware.list_sync import JOB as LIST_SYNC_JOB
from middleware.node import IntermediateServer
from middleware.record_search import EXPORT_COLUMNS, RecordFilter

__all__ = [
    "EXPORT_LIMIT",
    "JST",
    "LANG_COOKIE",
    "MAX_FORM_BODY",
    "NAMED_COLUMNS",
    "PAGE_SIZE",
    "RECENT_FAILURES",
    "RECORD_FILTERS",
    "ROUTE_ROLES",
    "SESSION_COOKIE",
    "TIMELINE_KEYS",
    "Console",
    "FaultNotes",
    "console_listener",
    "japan_time",
    "job_rows",
    "page",
    "record_filter",
    "records_csv",
    "time_left",
    "tls_options",
]

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = b"renkei_console"
LANG_COOKIE = b"renkei_lang"
PAGE_SIZE = 50
# The largest request body: the console's forms are a few fields (a reason, a password).
MAX_FORM_BODY = 65_536
# Sent with every answer of the console: browsers keep to HTTPS for a year once they have
# seen it, and no address of the console (a 処理通番 in a path) leaks to another site.
SECURITY_HEADERS = (
    (b"Strict-Transport-Security", b"max-age=31536000"),
    (b"Referrer-Policy", b"no-referrer"),
)
EXPORT_LIMIT = 100_000
RECENT_FAILURES = 5  # failed runs shown per job on the ジョブ状況 page

Handler = Callable[..., Awaitable[Any]]

RECORD_FILTERS = (
    "date_from",
    "date_to",
    "event",
    "direction",
    "counterpart",
    "procedure",
    "information_name",
    "status",
    "transaction_number",
    "person",
    "errors",
)

# The statuses a provision record may have (the search's choices).
RECORD_STATUSES = ("accepted", "provided", "no_data", "held", "refused", "error")

# The keys of one timeline entry (besides ``party``), as ``transaction_path`` gives them.
TIMELINE_KEYS = (
    "seq",
    "recorded_at",
    "event",
    "status",
    "requester",
    "provider",
    "information_name",
    "error_code",
    "non_disclosure",
    "delegating_requester",
    "delegating_provider",
)


def tls_options(layout: PkiLayout, code: str) -> CertificateOptions:
    """Server-only TLS with the institution's TLS certificate (no client certificate)."""
    return server_only_options(layout.institution_tls(code).load())


def time_left(until: datetime, now: datetime) -> tuple[int, int] | None:
    """Hours and minutes from ``now`` until ``until`` (None when it has passed)."""
    seconds = int((until - now).total_seconds())
    if seconds <= 0:
        return None
    return seconds // 3600, seconds % 3600 // 60


def job_rows(states: Sequence[JobState], histories: Sequence[JobHistory]) -> list[dict[str, Any]]:
    """What the ジョブ状況 page shows of each job: its state here (this process), its last
    run and last success (the newer of this process's and the database's: another process
    of the institution may have run it since), its next run and its recent failures."""
    recorded = {history.job: history for history in histories}
    rows = []
    for state in states:
        history = recorded.get(state.name)
        runs = [run for run in (state.last_run, history and history.last_run) if run]
        successes = [
            at for at in (state.last_success_at, history and history.last_success_at) if at
        ]
        rows.append(
            {
                "name": state.name,
                "condition": state.condition,
                "interval": state.interval,
                "last_run": max(runs, key=lambda run: run.ended_at) if runs else None,
                "last_success_at": max(successes) if successes else None,
                "next_run_at": state.next_run_at,
                "failures": state.failures,
                "failures_kept": history.failures_kept if history else 0,
                "recent_failures": history.recent_failures if history else (),
            }
        )
    return rows


def _arg(request: Request, name: str) -> str:
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode())
    if not values:
        return ""
    return str(values[0].decode("utf-8", "replace")).strip()


def _args(request: Request, name: str) -> list[str]:
    args: dict[bytes, list[bytes]] = request.args or {}
    return [v.decode("utf-8", "replace") for v in args.get(name.encode(), [])]


def _cookie(request: Request, name: bytes) -> str | None:
    value = request.getCookie(name)
    return value.decode("ascii", "replace") if value else None


def _number(value: str) -> int:
    """A whole number from a query argument (a page, a ``before`` seq)."""
    if not value.isdecimal() or len(value) > 18:
        raise RenkeiError(errors.BAD_REQUEST, detail=f"not a number: {value[:40]}")
    return int(value)


def _parse_date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        day = datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise RenkeiError(errors.BAD_REQUEST, detail=f"not a date (YYYY-MM-DD): {value}") from None
    return day.replace(tzinfo=JST)


def page(
    *roles: str, method: str = "GET", login_first: bool = False
) -> Callable[[Handler], Callable[..., Deferred[Any]]]:
    """Authorize a route: a live session, one of ``roles``, and on POST the CSRF token.

    The handler is called as ``handler(self, request, session, **kwargs)``. With
    ``login_first`` a visitor with no session cookie at all is sent to the login page (a
    first visit), not told their session expired. The session is kept on the request, so
    that an error page still shows the navigation.
    """

    def decorate(handler: Handler) -> Callable[..., Deferred[Any]]:
        @wraps(handler)
        def route(instance: Console, request: Request, **kwargs: Any) -> Deferred[Any]:
            async def run() -> Any:
                if login_first and _cookie(request, SESSION_COOKIE) is None:
                    request.redirect(b"/login")
                    return b""
                session = await instance.resume(request)
                request.console_session = session  # type: ignore[attr-defined]
                if roles:
                    staff.require_role(session.user, *roles)
                if method == "POST":
                    staff.check_csrf(session, _arg(request, "csrf_token") or None)
                return await handler(instance, request, session, **kwargs)

            return ensureDeferred(run())

        route.roles = roles  # type: ignore[attr-defined]
        return route

    return decorate


# What the console is told of the faults injected on a transaction's messages: for a 処理通番
# and the ids of its queries here, each hit as a dict (at, fault, kind, source, destination,
# operation, message_id).
FaultNotes = Callable[[str, Sequence[str]], list[dict[str, Any]]]


class Console:
    """The console of one intermediate server."""

    app = Klein()
    log = Logger()

    def __init__(
        self,
        node: IntermediateServer,
        idle_timeout: float | None = None,
        fault_notes: FaultNotes | None = None,
    ) -> None:
        self.node = node
        # The faults injected on the messages of a transaction, when the network in a box
        # injects any (simulators/faults.py): shown in its timeline.
        self.fault_notes = fault_notes
        default = staff.IDLE_TIMEOUT
        self.idle_timeout = (
            min(timedelta(seconds=idle_timeout), default) if idle_timeout else default
        )
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )

    # -- plumbing --------------------------------------------------------------------------

    def _language(self, request: Request) -> str:
        asked = _arg(request, "lang")
        if asked in LANGUAGES:
            request.addCookie(
                LANG_COOKIE, asked.encode(), path=b"/", secure=True, sameSite=b"strict"
            )
            return asked
        cookie = _cookie(request, LANG_COOKIE)
        return cookie if cookie in LANGUAGES else "ja"

    def render(
        self,
        request: Request,
        template: str,
        session: staff.Session | None = None,
        status: int = 200,
        **values: Any,
    ) -> bytes:
        lang = self._language(request)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Frame-Options", b"DENY")
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(
            b"Content-Security-Policy",
            b"default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'",
        )
        if session is None:  # an error page after the session was resumed
            session = getattr(request, "console_session", None)
        t = translator(lang)
        page = self.templates.get_template(template).render(
            t=t,
            lang=lang,
            session=session,
            user=session.user if session else None,
            csrf=session.csrf_token if session else "",
            institution=self.node.institution,
            path=request.path.decode("utf-8", "replace"),
            # What is failing now (middleware/health.py), shown on every page as a banner.
            banner=self.node.health.failing,
            japan_time=lambda moment: japan_time(moment, lang),
            japan_date=lambda moment: japan_date(moment, lang),
            japan_month=lambda moment: japan_month(moment, lang),
            known=WORDS.__contains__,
            names=self.naming(lang),
            **values,
        )
        return page.encode("utf-8")

    def naming(self, lang: str) -> Naming:
        """The names of the codes a page shows, in ``lang``."""
        return Naming(
            self.node.catalogue,
            self._institution_names(),
            lang,
            translator(lang),
            WORDS.__contains__,
        )

    def resume(self, request: Request) -> Deferred[staff.Session]:
        return self.node.store.staff.resume(
            self.node.now(), _cookie(request, SESSION_COOKIE), self.idle_timeout
        )

    @app.handle_errors(RenkeiError)
    def coded_error(self, request: Request, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, RenkeiError)
        return self.render(
            request,
            "error.html",
            status=error.status,
            error=error,
            login_again=error.code == errors.SESSION_EXPIRED.code,
        )

    @app.handle_errors(NotFound)
    def not_found(self, request: Request, failure: Failure) -> Deferred[bytes]:
        """404 PageNotFound, with the navigation when the visitor is logged in."""

        async def answer() -> bytes:
            session = None
            if _cookie(request, SESSION_COOKIE) is not None:
                try:
                    session = await self.resume(request)
                except RenkeiError:
                    session = None
            error = RenkeiError(errors.PAGE_NOT_FOUND)
            return self.render(request, "error.html", session, status=error.status, error=error)

        return ensureDeferred(answer())

    @app.handle_errors(Exception)
    def internal_error(self, request: Request, failure: Failure) -> bytes:
        self.log.failure("console error", failure)
        error = RenkeiError(errors.INTERNAL)
        return self.render(request, "error.html", status=error.status, error=error)

    @app.route("/static/console.css")
    def stylesheet(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/css; charset=utf-8")
        request.setHeader(b"Cache-Control", b"max-age=3600")
        return (HERE / "static" / "console.css").read_bytes()

    # -- login and logout -------------------------------------------------------------------

    @app.route("/login", methods=["GET"])
    def login_form(self, request: Request) -> bytes:
        return self.render(request, "login.html", expired=_arg(request, "expired") == "1")

    @app.route("/login", methods=["POST"])
    async def login(self, request: Request) -> bytes:
        try:
            session = await self.node.store.staff.authenticate(
                self.node.now(),
                _arg(request, "name"),
                _arg(request, "password"),
                _arg(request, "totp") or None,
            )
        except RenkeiError as refusal:
            return self.render(
                request,
                "login.html",
                status=refusal.status,
                error=refusal,
                name=_arg(request, "name"),
            )
        request.addCookie(
            SESSION_COOKIE,
            session.token.encode(),
            path=b"/",
            secure=True,
            httpOnly=True,
            sameSite=b"strict",
        )
        request.redirect(b"/")
        return b""

    @app.route("/logout", methods=["POST"])
    async def logout(self, request: Request) -> bytes:
        session = await self.resume(request)
        staff.check_csrf(session, _arg(request, "csrf_token") or None)
        await self.node.store.staff.logout(self.node.now(), session.token)
        request.addCookie(
            SESSION_COOKIE,
            b"",
            path=b"/",
            secure=True,
            httpOnly=True,
            sameSite=b"strict",
            max_age=b"0",
        )
        request.redirect(b"/login")
        return b""

    # -- dashboard --------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    @page(login_first=True)
    async def dashboard(self, request: Request, session: staff.Session) -> bytes:
        now = self.node.now()
        today = now.astimezone(JST).replace(hour=0, minute=0, second=0, microsecond=0)
        figures = await self.node.store.statistics.dashboard(today)
        month = await self.node.store.statistics.dashboard(today.replace(day=1))
        listed = self.node.lists.current
        health = self.node.health
        failing = health.failing
        states = self.node.jobs.states()
        hub_job = next((state for state in states if state.name == LIST_SYNC_JOB), None)
        return self.render(
            request,
            "dashboard.html",
            session,
            figures=figures,
            month=month,
            today=today,
            listed=listed,
            list_expired=listed is not None and listed.expires_at <= now,
            ready=health.ready,
            checked_at=health.checked_at,
            failing=failing,
            hub_unreachable=any(p.check == "HubUnreachable" for p in failing),
            hub_contact=hub_job.last_success_at if hub_job is not None else None,
            jobs={
                condition: sum(1 for state in states if state.condition == condition)
                for condition in ("ok", "running", "failing", "waiting")
            },
        )

    # -- held provisions ---------------------------------------------------------------------

    @app.route("/held", methods=["GET"])
    @page("approver", "operator")
    async def held_list(self, request: Request, session: staff.Session) -> bytes:
        items = await self.node.held.items()
        ended = await self.node.held.expired()
        now = self.node.now()
        done = _arg(request, "done")
        return self.render(
            request,
            "held_list.html",
            session,
            items=[(item, time_left(item.hold_expires_at, now)) for item in items],
            ended=ended,
            done=done if done in ("approved", "refused") else "",
            done_number=_arg(request, "number")[:20],
            done_requester=self.naming(self._language(request)).institution(
                _arg(request, "requester")[:16]
            ),
        )

    async def _held_view(
        self, request: Request, session: staff.Session, number: str, with_content: bool = True
    ) -> dict[str, Any]:
        """What the held-provision pages show of ``number``: the item, why it is held, who
        asks and the time left; its content (read, and audited, only while it waits for a
        decision: none is shown once it is decided or its hold has ended)."""
        now = self.node.now()
        item = await self.node.held.item(number)
        waiting = item.state == HELD and item.hold_expires_at > now
        if waiting and with_content:
            # The content is read (and the read audited) only while it may be sent.
            item = await self.node.held.content(number, session.user.name)
        payload = item.payload if waiting and with_content else None
        content = None if payload is None else describe_payload(self.node.catalogue, payload)
        flagged = await self._flagged(item, content)
        return {
            "item": item,
            "content": content,
            "decided": not waiting,
            # Deleted after its retention ([retention] held_contents): said so, even decided.
            "content_deleted": item.payload is None,
            "self_information": item.procedure == SELF_INFORMATION_PROCEDURE,
            "attachments": [] if payload is None else payload_attachments(payload),
            "left": time_left(item.hold_expires_at, now),
            "flagged": flagged,
        }

    async def _flagged(
        self, item: HeldItem, content: dict[str, Any] | None
    ) -> list[dict[str, Any]]:
        """The 副本 records flagged 自動応答不可 that hold this provision, with the reason
        given when the flag was set (its newest ``flag_change`` in the audit log)."""
        holdings = await self.node.store.persons.holdings(item.integrated_address_number)
        asked = {record["record_id"] for record in content["records"]} if content else None
        flagged = [
            record
            for record in (holdings.records if holdings is not None else [])
            if record.suppressed
            and record.information_name == item.information_name
            and (asked is None or record.record_id in asked)
        ]
        reasons = await self.node.store.audit.latest(
            "flag_change", [record.record_id for record in flagged]
        )
        return [
            {
                "record_id": record.record_id,
                "data_set": record.data_set,
                "reason": ((reasons.get(record.record_id) or {}).get("detail") or {}).get("reason"),
                "flagged_at": (reasons.get(record.record_id) or {}).get("recorded_at"),
                "flagged_by": (reasons.get(record.record_id) or {}).get("actor"),
            }
            for record in flagged
        ]

    @app.route("/held/<number>", methods=["GET"])
    @page("approver")
    async def held_detail(self, request: Request, session: staff.Session, number: str) -> bytes:
        view = await self._held_view(request, session, number)
        return self.render(request, "held_detail.html", session, **view)

    async def _decision(
        self, request: Request, session: staff.Session, number: str, decision: str
    ) -> bytes:
        """The two steps of a decision: without ``confirmed`` a page showing what will be
        sent (the content, or the refusal and its reason) with a button that confirms it;
        with it, the decision, then the list of held provisions with a message."""
        reason = _arg(request, "reason")
        if decision == "refuse" and not reason:
            raise RenkeiError(errors.BAD_REQUEST, detail="a refusal needs a reason")
        if _arg(request, "confirmed") != "1":
            view = await self._held_view(
                request, session, number, with_content=decision == "approve"
            )
            item = view["item"]
            if item.state != HELD:
                raise RenkeiError(
                    errors.HELD_ALREADY_DECIDED, transaction_number=number, state=item.state
                )
            if view["decided"]:
                raise RenkeiError(errors.HOLD_EXPIRED, expires_at=item.hold_expires_at)
            return self.render(
                request, "held_confirm.html", session, decision=decision, reason=reason, **view
            )
        if decision == "approve":
            await self.node.held.approve(number, session.user.name)
        else:
            await self.node.held.refuse(number, session.user.name, reason)
        item = await self.node.held.item(number)
        done = "approved" if decision == "approve" else "refused"
        query = urlencode({"done": done, "number": number, "requester": item.requester})
        request.redirect(f"/held?{query}".encode())
        return b""

    @app.route("/held/<number>/approve", methods=["POST"])
    @page("approver", method="POST")
    async def held_approve(self, request: Request, session: staff.Session, number: str) -> bytes:
        return await self._decision(request, session, number, "approve")

    @app.route("/held/<number>/refuse", methods=["POST"])
    @page("approver", method="POST")
    async def held_refuse(self, request: Request, session: staff.Session, number: str) -> bytes:
        return await self._decision(request, session, number, "refuse")

    # -- audit log ------------------------------------------------------------------------------

    @app.route("/audit", methods=["GET"])
    @page("auditor")
    async def audit_log(self, request: Request, session: staff.Session) -> bytes:
        actor = _arg(request, "actor") or None
        action = _arg(request, "action") or None
        page_number = max(1, _number(_arg(request, "page") or "1"))

        found = await self.node.store.audit.page(
            limit=PAGE_SIZE, offset=(page_number - 1) * PAGE_SIZE, actor=actor, action=action
        )
        total = found.total
        return self.render(
            request,
            "audit.html",
            session,
            entries=found.entries,
            total=total,
            broken=found.first_broken,
            actor=actor or "",
            action=action or "",
            actions=sorted(audit.ACTIONS),
            page=page_number,
            pages=max(1, -(-total // PAGE_SIZE)),
            detail_json=lambda d: json.dumps(d, ensure_ascii=False, sort_keys=True),
        )

    # -- users ------------------------------------------------------------------------------------

    @app.route("/users", methods=["GET"])
    @page("admin")
    async def users(self, request: Request, session: staff.Session) -> bytes:
        return await self._users_page(request, session)

    async def _users_page(
        self, request: Request, session: staff.Session, status: int = 200, **values: Any
    ) -> bytes:
        users = await self.node.store.staff.users()
        return self.render(
            request,
            "users.html",
            session,
            status=status,
            users=users,
            roles=sorted(staff.ROLES),
            **values,
        )

    @app.route("/users", methods=["POST"])
    @page("admin", method="POST")
    async def user_add(self, request: Request, session: staff.Session) -> bytes:
        name = _arg(request, "name")
        try:
            secret = await self.node.store.staff.add_user(
                self.node.now(),
                name,
                _arg(request, "display_name") or name,
                _arg(request, "password"),
                _args(request, "roles"),
                actor=session.user.name,
                with_totp=_arg(request, "with_totp") == "1",
            )
        except RenkeiError as refusal:
            return await self._users_page(request, session, status=refusal.status, error=refusal)
        uri = (
            staff.totp_provisioning_uri(name, secret, self.node.institution.name)
            if secret
            else None
        )
        return await self._users_page(
            request, session, created=name, totp_secret=secret, totp_uri=uri
        )

    @app.route("/users/<name>/disable", methods=["POST"])
    @page("admin", method="POST")
    async def user_disable(self, request: Request, session: staff.Session, name: str) -> bytes:
        await self.node.store.staff.disable_user(self.node.now(), name, actor=session.user.name)
        request.redirect(b"/users")
        return b""

    @app.route("/users/<name>/password", methods=["POST"])
    @page("admin", method="POST")
    async def user_password(self, request: Request, session: staff.Session, name: str) -> bytes:
        try:
            await self.node.store.staff.reset_password(
                self.node.now(),
                name,
                _arg(request, "password"),
                actor=session.user.name,
            )
        except RenkeiError as refusal:
            return await self._users_page(request, session, status=refusal.status, error=refusal)
        return await self._users_page(request, session, password_reset=name)

    @app.route("/users/<name>/roles", methods=["POST"])
    @page("admin", method="POST")
    async def user_roles(self, request: Request, session: staff.Session, name: str) -> bytes:
        roles = _args(request, "roles")
        try:
            if name == session.user.name and "admin" not in roles:
                # An admin cannot take the role away from themself (no admin-less console).
                raise RenkeiError(
                    errors.BAD_REQUEST, detail="you cannot remove your own admin role"
                )
            secret = await self.node.store.staff.set_roles(
                self.node.now(), name, roles, actor=session.user.name
            )
        except RenkeiError as refusal:
            return await self._users_page(request, session, status=refusal.status, error=refusal)
        return await self._users_page(
            request, session, roles_changed=name, **self._totp_values(name, secret)
        )

    @app.route("/users/<name>/totp", methods=["POST"])
    @page("admin", method="POST")
    async def user_totp_reset(self, request: Request, session: staff.Session, name: str) -> bytes:
        try:
            secret = await self.node.store.staff.reset_totp(
                self.node.now(), name, actor=session.user.name
            )
        except RenkeiError as refusal:
            return await self._users_page(request, session, status=refusal.status, error=refusal)
        return await self._users_page(
            request, session, totp_reset=name, **self._totp_values(name, secret)
        )

    def _totp_values(self, name: str, secret: str | None) -> dict[str, Any]:
        """The template values that show a new TOTP secret (once) and its provisioning URI."""
        if not secret:
            return {}
        uri = staff.totp_provisioning_uri(name, secret, self.node.institution.name)
        return {"totp_secret": secret, "totp_uri": uri}

    # -- provision records -------------------------------------------------------------------

    def _record_filter(self, request: Request) -> tuple[dict[str, str], RecordFilter]:
        """The search's filters as the person gave them, and as a `RecordFilter`."""
        values = {name: _arg(request, name) for name in RECORD_FILTERS}
        return values, record_filter(values)

    @app.route("/records", methods=["GET"])
    @page("operator", "auditor")
    async def records(self, request: Request, session: staff.Session) -> bytes:
        values, search = self._record_filter(request)
        before = _arg(request, "before")
        # One row more than a page says whether there is a next page.
        rows = await self.node.store.records.search(
            search, PAGE_SIZE + 1, _number(before) if before else None
        )
        more = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        query_string = urlencode({k: v for k, v in values.items() if v})
        next_link = f"/records?{query_string}&before={rows[-1]['seq']}" if more and rows else None
        names = self.naming(self._language(request))
        institutions = self._institution_names()
        return self.render(
            request,
            "records.html",
            session,
            rows=rows,
            filters=values,
            next_link=next_link,
            before=before,
            page_size=PAGE_SIZE,
            query_string=query_string,
            code=self.node.code,
            counterparts=sorted(
                ((c, n) for c, n in institutions.items() if c != self.node.code),
                key=lambda pair: pair[0],
            ),
            procedures=[(p.code, names.procedure(p.code)) for p in self.node.catalogue.procedures],
            information_names=[
                (i.code, names.information_name(i.code))
                for i in self.node.catalogue.information_names
            ],
            statuses=RECORD_STATUSES,
        )

    @app.route("/records/export.csv", methods=["GET"])
    @page("auditor")
    async def records_export(self, request: Request, session: staff.Session) -> bytes:
        values, search = self._record_filter(request)
        rows = await self.node.store.records.export(
            search,
            EXPORT_LIMIT,
            now=self.node.now(),
            actor=session.user.name,
            described={k: v for k, v in values.items() if v},
        )
        out = records_csv(EXPORT_COLUMNS, rows, self.naming(self._language(request)))
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Disposition", b'attachment; filename="provision-records.csv"')
        return out.encode("utf-8-sig")

    @app.route("/records/<number>", methods=["GET"])
    @page("operator", "auditor")
    async def record_detail(self, request: Request, session: staff.Session, number: str) -> bytes:
        found = await self.node.store.records.transaction(number)
        if not found.records:
            raise RenkeiError(errors.UNKNOWN_TRANSACTION, transaction_number=number[:20])
        path_error: str | None = None
        try:
            path = await self.node.transaction_path(number)
        except Exception as failure:  # the hub unreachable or refusing: our records only
            path_error = (
                failure.code if isinstance(failure, RenkeiError) else type(failure).__name__
            )
            self.log.warn(
                "transaction path of {number} from the hub failed: {failure}",
                number=number,
                failure=failure,
            )
            party = self.node.institution.name
            path = [
                {"party": party, **{key: row[key] for key in TIMELINE_KEYS}}
                for row in found.records
            ]
        query_ids = [found.query["query_id"]] if found.query is not None else []
        faults = self.fault_notes(number, query_ids) if self.fault_notes is not None else []
        return self.render(
            request,
            "record_detail.html",
            session,
            number=number,
            timeline=path,
            faults=faults,
            path_error=path_error,
            parties={member.name: member.display_name for member in self.node.config.members},
            records=found.records,
            query=found.query,
            provision=found.provision,
        )

    # -- persons ------------------------------------------------------------------------------

    @app.route("/persons", methods=["GET"])
    @page("operator", "auditor", "admin")
    async def person_search(self, request: Request, session: staff.Session) -> bytes:
        number = _arg(request, "number")
        if number:
            request.redirect(f"/persons/{number}".encode())
            return b""
        return self.render(request, "person.html", session, number="", found=None)

    @app.route("/persons/<number>", methods=["GET"])
    @page("operator", "auditor", "admin")
    async def person_page(self, request: Request, session: staff.Session, number: str) -> bytes:
        found = await self.node.store.persons.view(number, session.user.name, self.node.now())
        records = []
        for item in found.records if found is not None else []:
            records.append(
                {
                    "record_id": item.record_id,
                    "information_name": item.information_name,
                    "data_set": item.data_set,
                    "items": self._item_names(item.information_name, item.data_set, item.items),
                    "suppressed": bool(item.suppressed),
                    "registered_at": item.registered_at,
                }
            )
        return self.render(
            request,
            "person.html",
            session,
            status=200 if found is not None else 404,
            number=number,
            found=found,
            records=records,
            done=_arg(request, "done"),
        )

    def _item_names(self, information_name: str, data_set: str, items: str) -> list[str]:
        codes = list(json.loads(items))
        try:
            found = self.node.catalogue.information_name(information_name).data_set(data_set)
            return [found.item(code).name for code in codes]
        except (RenkeiError, KeyError):
            return codes

    @app.route("/persons/<number>/flags/<record_id>", methods=["POST"])
    @page("admin", method="POST")
    async def person_flag(
        self, request: Request, session: staff.Session, number: str, record_id: str
    ) -> bytes:
        reason = _arg(request, "reason")
        if not reason:
            raise RenkeiError(errors.BAD_REQUEST, detail="a flag change needs a reason")
        suppressed = _arg(request, "suppressed") == "1"
        await self.node.held.set_suppression(record_id, suppressed, session.user.name, reason)
        request.redirect(f"/persons/{number}?done=flag".encode())
        return b""

    # -- jobs (バッチの状況管理) ---------------------------------------------------------------

    @app.route("/jobs", methods=["GET"])
    @page("operator", "admin")
    async def jobs(self, request: Request, session: staff.Session) -> bytes:
        states = self.node.jobs.states()
        histories = await self.node.store.jobs.history(
            [state.name for state in states], RECENT_FAILURES
        )
        return self.render(request, "jobs.html", session, jobs=job_rows(states, histories))

    # -- お知らせ --------------------------------------------------------------------------------

    @app.route("/notices", methods=["GET"])
    @page("operator", "auditor")
    async def notices(self, request: Request, session: staff.Session) -> bytes:
        found = await self.node.notices.recent(None, PAGE_SIZE)
        return self.render(request, "notices.html", session, notices=found)

    @app.route("/notices/<notice_id>", methods=["GET"])
    @page("operator", "auditor")
    async def notice_detail(
        self, request: Request, session: staff.Session, notice_id: str
    ) -> bytes:
        found = await self.node.notices.status(notice_id, None)
        return self.render(request, "notice_detail.html", session, notice=found)

    # -- business statistics (業務統計) ---------------------------------------------------

    def _institution_names(self) -> dict[str, str]:
        """Institution names by code: the network's directory (the list in force), else the
        configuration's."""
        names = {member.code: member.display_name for member in self.node.config.members}
        listed = self.node.lists.current
        if listed is not None:
            names.update({code: entry.name for code, entry in listed.institutions.items()})
        return names

    async def _statistics(
        self, request: Request
    ) -> tuple[Period, str, Names, list[SideTable], datetime, str]:
        """The period and grouping the form asks, the names of its codes, its tables, the time
        they were read at and the page's language."""
        now = self.node.now()
        period = period_of(_arg(request, "from"), _arg(request, "to"), now)
        group = _arg(request, "group") or GROUPINGS[0]
        if group not in GROUPINGS:
            raise RenkeiError(errors.BAD_REQUEST, detail=f"no such grouping: {group[:40]}")
        found = await self.node.store.business_statistics.figures(period.since, period.until, group)
        lang = self._language(request)
        t = translator(lang)
        names = Names(self.node.catalogue, self._institution_names(), lang, t)
        return period, group, names, side_tables(found, period, group, names, t), now, lang

    @app.route("/statistics", methods=["GET"])
    @page("operator", "auditor", "admin")
    async def statistics(self, request: Request, session: staff.Session) -> bytes:
        period, group, names, tables, now, lang = await self._statistics(request)
        moment = now.astimezone(JST)
        return self.render(
            request,
            "statistics.html",
            session,
            period=period,
            group=group,
            groupings=GROUPINGS,
            stat_names=names,
            tables=tables,
            since_label=month_label(period.since, lang),
            until_label=month_label(period.until, lang),
            as_of=(
                f"{moment.year}年{moment.month}月{moment.day}日 {moment:%H:%M}"
                if lang == "ja"
                else f"{moment:%Y-%m-%d %H:%M}"
            ),
            query_string=urlencode({"from": period.since, "to": period.until, "group": group}),
        )

    @app.route("/statistics/export.csv", methods=["GET"])
    @page("operator", "auditor", "admin")
    async def statistics_export(self, request: Request, session: staff.Session) -> bytes:
        period, group, names, tables, _, lang = await self._statistics(request)
        t = translator(lang)
        name = f"business-statistics-{period.since}-{period.until}-by-{group}.csv"
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Content-Disposition", f'attachment; filename="{name}"'.encode())
        return statistics_csv(tables, group, names, t)

    # -- permitted-query list -------------------------------------------------------------

    @app.route("/permitted-list", methods=["GET"])
    @page("operator", "auditor", "admin", "approver")
    async def permitted_list(self, request: Request, session: staff.Session) -> bytes:
        listed = self.node.lists.current
        text = _arg(request, "q")
        names = self.naming(self._language(request))
        rows = []
        for rule in listed.rules if listed is not None else ():
            affair_name = next(
                (
                    names.affair(p.code)
                    for p in self.node.catalogue.procedures
                    if p.affair == rule.affair
                ),
                rule.affair,
            )
            fields = [
                rule.requester_kind,
                rule.affair,
                rule.procedure,
                rule.provider_kind,
                rule.information_name,
                rule.legal_basis,
                names.word("kind", rule.requester_kind),
                names.word("kind", rule.provider_kind),
                affair_name,
                names.procedure(rule.procedure),
                names.information_name(rule.information_name),
            ]
            if not text or any(text in field for field in fields):
                rows.append({**asdict(rule), "affair_name": affair_name})
        return self.render(
            request, "permitted_list.html", session, listed=listed, rows=rows, q=text
        )


def record_filter(values: dict[str, str]) -> RecordFilter:
    """A search from the console's form (``values`` by ``RECORD_FILTERS``): the dates are
    days in Japan's calendar, both included; empty fields match everything."""
    start = _parse_date(values.get("date_from", ""))
    end = _parse_date(values.get("date_to", ""))
    direction = values.get("direction") or None
    if direction not in (None, "outgoing", "incoming"):
        raise RenkeiError(errors.BAD_REQUEST, detail=f"no such direction: {direction[:40]}")
    return RecordFilter(
        since=start,
        until=end + timedelta(days=1) if end is not None else None,
        direction=direction,
        errors_only=values.get("errors") == "1",
        **{
            name: values.get(name) or None
            for name in RECORD_FILTERS
            if name not in ("date_from", "date_to", "direction", "errors")
        },
    )


NAMED_COLUMNS = {
    "requester_name": ("requester", "institution"),
    "provider_name": ("provider", "institution"),
    "procedure_name": ("procedure", "procedure"),
    "information_name_label": ("information_name", "information_name"),
    "event_label": ("event", "event"),
    "status_label": ("status", "status"),
}
"""The export's columns after the record's own: the names of its codes (``names`` given)."""


def records_csv(columns: list[str], rows: Iterable[Any], names: Naming | None = None) -> str:
    """The export's CSV text (a header row, then ``rows``): times in ISO 8601 in Japan time
    (``2026-12-02T03:05:00+09:00``); with ``names``, the names of the codes after them."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns + (list(NAMED_COLUMNS) if names is not None else []))
    for row in rows:
        cells = [
            v.astimezone(JST).isoformat() if isinstance(v, datetime) else ("" if v is None else v)
            for v in row
        ]
        if names is not None:
            by_name = dict(zip(columns, row, strict=False))
            for source, kind in NAMED_COLUMNS.values():
                code = by_name.get(source)
                if kind in ("event", "status"):
                    cells.append(names.word(kind, code))
                else:
                    cells.append(getattr(names, kind)(code))
        writer.writerow(cells)
    return out.getvalue()


ROUTE_ROLES: dict[str, tuple[str, ...]] = {
    name: getattr(getattr(Console, name), "roles", ())
    for name in dir(Console)
    if hasattr(getattr(Console, name), "roles")
}
"""Each page handler's roles (for tests and documentation)."""


def console_listener(console: Console, reactor: Any) -> Listener:
    """The listener of a node's console (``console_listen``): TLS with the institution's
    certificate (staff log in with a password and a TOTP code, not a client certificate),
    form bodies only, refusals in plain text."""
    node = console.node
    assert node.institution.console_listen is not None
    return Listener(
        reactor,
        node.institution.console_listen,
        console.app.resource(),
        tls_options(PkiLayout(node.config.pki), node.code),
        max_body=MAX_FORM_BODY,
        render_refusal=text_refusal,
        shared=node.institution.processes > 1,
        headers=SECURITY_HEADERS,
    )
