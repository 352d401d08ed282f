"""The operator console against a real box: login, sessions, CSRF and roles on every route."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlencode

import pytest_twisted
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.client import Agent
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from crypto.pki import PkiLayout, server_name_of_institution
from middleware import audit, staff
from tests.network import MEGURO
from tests.test_held import held_item, setagaya_asks, wait_for_state

__all__ = ["setagaya_asks"]  # the fixture, shared with tests/test_held.py

PASSWORD = "correct horse battery"
USERS = {
    "op": ("operator",),
    "ap": ("approver",),
    "au": ("auditor",),
    "ad": ("admin",),
}


@implementer(IPolicyForHTTPS)
class TrustTestCA:
    """Check the console's certificate against the test network CA and Meguro's name."""

    def __init__(self, pki: Any) -> None:
        self.ca = Certificate.loadPEM(PkiLayout(pki).ca().certificate.read_bytes())

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(server_name_of_institution(MEGURO), trustRoot=self.ca)


class Browser:
    """A tiny cookie-keeping HTTPS client of the console (no client certificate)."""

    def __init__(self, box: Any) -> None:
        import treq
        from twisted.internet import reactor

        self.base = box.config.institution("meguro").console_address
        self.http = treq.client.HTTPClient(
            cast(Any, Agent(reactor, contextFactory=TrustTestCA(box.config.pki)))
        )
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    async def request(
        self, method: str, path: str, form: dict[str, Any] | None = None
    ) -> tuple[int, str, Any]:
        headers = {}
        if self.cookies:
            headers[b"Cookie"] = ["; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()]
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if form is not None:
            kwargs["data"] = urlencode(form, doseq=True).encode()
            headers[b"Content-Type"] = [b"application/x-www-form-urlencoded"]
        response = await self.http.request(method, self.base + path, **kwargs)
        body = (await response.content()).decode("utf-8")
        for value in response.headers.getRawHeaders(b"set-cookie", []):
            name, _, rest = value.decode().partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        found = re.search(r'name="csrf_token" value="([^"]+)"', body)
        if found:
            self.csrf = found.group(1)
        return response.code, body, response.headers

    async def get(self, path: str) -> tuple[int, str, Any]:
        return await self.request("GET", path)

    async def post(self, path: str, form: dict[str, Any], csrf: bool = True) -> Any:
        if csrf:
            form = {**form, "csrf_token": self.csrf}
        return await self.request("POST", path, form)

    async def login(self, name: str, password: str = PASSWORD, totp: str = "") -> Any:
        code, body, headers = await self.post(
            "/login", {"name": name, "password": password, "totp": totp}, csrf=False
        )
        if code == 302:
            await self.get("/")
        return code, body, headers


async def add_users(node: Any) -> dict[str, str | None]:
    secrets = {}
    for name, roles in USERS.items():
        secrets[name] = await node.database.run(
            staff.add_user, node.now(), name, name, PASSWORD, roles, actor=audit.SYSTEM
        )
    return secrets


def code_for(node: Any, secret: str | None, step: int = 0) -> str:
    if secret is None:
        return ""
    return staff.totp_code(secret, node.now() + timedelta(seconds=30 * step))


async def logged_in(box: Any, name: str, secret: str | None) -> Browser:
    browser = Browser(box)
    code, body, _ = await browser.login(name, totp=code_for(box.nodes["meguro"], secret))
    assert code == 302, body
    return browser


# Every route, its method and the roles allowed (None: any logged-in user).
ROUTES: list[tuple[str, str, tuple[str, ...] | None]] = [
    ("GET", "/", None),
    ("GET", "/held", ("approver", "operator")),
    ("GET", "/held/00000000000000000001", ("approver",)),
    ("POST", "/held/00000000000000000001/approve", ("approver",)),
    ("POST", "/held/00000000000000000001/refuse", ("approver",)),
    ("GET", "/audit", ("auditor",)),
    ("GET", "/users", ("admin",)),
    ("POST", "/users", ("admin",)),
    ("POST", "/users/nobody/disable", ("admin",)),
    ("POST", "/users/nobody/password", ("admin",)),
    ("POST", "/users/nobody/roles", ("admin",)),
    ("POST", "/users/nobody/totp", ("admin",)),
    ("GET", "/records", ("operator", "auditor")),
    ("GET", "/records/export.csv", ("auditor",)),
    ("GET", "/records/00000000000000000001", ("operator", "auditor")),
    ("GET", "/persons", ("operator", "auditor", "admin")),
    ("GET", "/persons/000000000010001", ("operator", "auditor", "admin")),
    ("POST", "/persons/000000000010001/flags/NOPE", ("admin",)),
    ("GET", "/permitted-list", ("operator", "auditor", "admin", "approver")),
    ("GET", "/jobs", ("operator", "admin")),
    ("GET", "/notices", ("operator", "auditor")),
    ("GET", "/notices/00000000-0000-0000-0000-000000000000", ("operator", "auditor")),
    ("GET", "/statistics", ("operator", "auditor", "admin")),
    ("GET", "/statistics/export.csv", ("operator", "auditor", "admin")),
]


def test_every_page_route_is_in_the_role_table() -> None:
    """The table below covers each authorized handler, with the roles the code requires."""
    from adapters.console.app import ROUTE_ROLES

    assert len(ROUTE_ROLES) == len(ROUTES)
    assert set(ROUTE_ROLES["held_detail"]) == {"approver"}
    assert set(ROUTE_ROLES["records_export"]) == {"auditor"}


@pytest_twisted.ensureDeferred
async def test_role_checks_on_every_route(box: Any) -> None:
    """Each user gets 403 RoleForbidden exactly on the routes its roles do not allow, and a
    logged-out visitor gets 401 SessionExpired everywhere."""
    node = box.nodes["meguro"]
    secrets = await add_users(node)
    browsers = {name: await logged_in(box, name, secrets[name]) for name in USERS}
    anonymous = Browser(box)
    for method, path, allowed in ROUTES:
        for name, roles in USERS.items():
            browser = browsers[name]
            if method == "GET":
                code, body, _ = await browser.get(path)
            else:
                code, body, _ = await browser.post(path, {"reason": "x", "password": "short"})
            permitted = allowed is None or any(role in allowed for role in roles)
            if permitted:
                assert code != 403, (method, path, name, body)
            else:
                assert code == 403, (method, path, name, code)
                assert "RoleForbidden" in body
                assert "の権限が必要です" in body and "requires the role" in body
        code, body, headers = await anonymous.request(
            method, path, {} if method == "POST" else None
        )
        if (method, path) == ("GET", "/"):  # a first visit: to the login page
            assert code == 302 and headers.getRawHeaders(b"location") == [b"/login"]
        else:
            assert code == 401 and "SessionExpired" in body, (method, path)


@pytest_twisted.ensureDeferred
async def test_login_sets_a_strict_secure_cookie_and_logout_ends_the_session(box: Any) -> None:
    """A login with password and TOTP sets a Secure, HttpOnly, SameSite=strict session cookie, the
    language choice sticks, and logging out ends the session."""
    node = box.nodes["meguro"]
    secrets = await add_users(node)
    browser = Browser(box)
    code, _, headers = await browser.login("ad", totp=code_for(node, secrets["ad"]))
    assert code == 302
    (cookie,) = [
        c.decode() for c in headers.getRawHeaders(b"set-cookie") if c.startswith(b"renkei_console")
    ]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    code, body, _ = await browser.get("/?lang=en")
    assert code == 200 and "Dashboard" in body and "Held, waiting" in body
    code, body, _ = await browser.get("/")
    assert "ダッシュボード" not in body  # the language cookie keeps English
    code, _, _ = await browser.post("/logout", {})
    assert code == 302
    code, _, headers = await browser.get("/")  # the cookie is gone: to the login page
    assert code == 302 and headers.getRawHeaders(b"location") == [b"/login"]
    browser.cookies["renkei_console"] = "a-session-that-ended"
    code, body, _ = await browser.get("/")
    assert code == 401 and "SessionExpired" in body


@pytest_twisted.ensureDeferred
async def test_login_failures_lock_the_account(box: Any) -> None:
    """Wrong passwords are LoginFailed, and after the maximum number of failures even the right
    password meets AccountLocked."""
    node = box.nodes["meguro"]
    await add_users(node)
    browser = Browser(box)
    code, body, _ = await browser.login("ad", password="wrong password!")
    assert code == 401 and "LoginFailed" in body
    for _ in range(staff.MAX_FAILED_ATTEMPTS - 1):
        await browser.login("ad", password="wrong password!")
    code, body, _ = await browser.login("ad", password=PASSWORD)
    assert code == 423 and "AccountLocked" in body


@pytest_twisted.ensureDeferred
async def test_a_form_without_its_csrf_token_is_refused(box: Any) -> None:
    """A form posted without its CSRF token is CsrfRejected and changes nothing; with the token it
    is applied."""
    node = box.nodes["meguro"]
    secrets = await add_users(node)
    browser = await logged_in(box, "ad", secrets["ad"])
    code, body, _ = await browser.post(
        "/users",
        {"name": "eve", "password": PASSWORD, "roles": "operator"},
        csrf=False,
    )
    assert code == 403 and "CsrfRejected" in body
    code, body, _ = await browser.post(
        "/users", {"name": "eve", "password": PASSWORD, "roles": "operator", "csrf_token": "x"}
    )
    assert code == 200  # with the right token (the helper overrides the wrong one)
    users = await node.database.run(staff.list_users)
    assert "eve" in [u["name"] for u in users]


@pytest_twisted.ensureDeferred
async def test_idle_session_expires(box: Any) -> None:
    """A session idle for longer than the console's timeout is ended (and audited)."""
    node = box.nodes["meguro"]
    await add_users(node)
    console = box.consoles["meguro"]
    browser = await logged_in(box, "op", None)
    console.idle_timeout = timedelta(seconds=0.5)  # times are kept to the second
    try:
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        await deferLater(reactor, 2.1, lambda: None)
        code, body, _ = await browser.get("/")
        assert code == 401 and "SessionExpired" in body
    finally:
        console.idle_timeout = staff.IDLE_TIMEOUT
    entries = await node.database.run(audit.audit_entries, limit=5, action="session_expired")
    assert entries and entries[0]["actor"] == "op"


@pytest_twisted.ensureDeferred
async def test_admin_adds_a_user_and_sees_the_totp_secret_once(box: Any) -> None:
    """An admin adds a user and sees the new TOTP secret once, never again on the users page."""
    node = box.nodes["meguro"]
    secrets = await add_users(node)
    browser = await logged_in(box, "ad", secrets["ad"])
    code, body, _ = await browser.post(
        "/users",
        {"name": "appr2", "display_name": "承認 次郎", "password": PASSWORD, "roles": ["approver"]},
    )
    assert code == 200
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', body)
    assert secret is not None and "otpauth://" in body
    code, body, _ = await browser.get("/users")
    assert secret.group(1) not in body
    code, body, _ = await browser.post("/users/appr2/password", {"password": "another long one"})
    assert code == 200
    code, body, _ = await browser.post("/users/appr2/disable", {})
    assert code == 302
    fresh = Browser(box)
    code, body, _ = await fresh.login(
        "appr2", password="another long one", totp=code_for(node, secret.group(1))
    )
    assert code == 401 and "LoginFailed" in body


@pytest_twisted.ensureDeferred
async def test_admin_changes_roles_and_resets_totp(box: Any) -> None:
    """Role changes show a new TOTP secret once when the new roles need one; a TOTP reset
    gives a new secret and ends the user's sessions; both are audited; others get 403."""
    node = box.nodes["meguro"]
    secrets = await add_users(node)
    admin = await logged_in(box, "ad", secrets["ad"])
    operator = await logged_in(box, "op", None)

    # operator (no TOTP) -> operator + approver: a TOTP secret is now needed, shown once
    code, body, _ = await admin.post("/users/op/roles", {"roles": ["operator", "approver"]})
    assert code == 200 and 'id="roles-changed"' in body
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', body)
    assert found is not None and "otpauth://" in body
    op_secret = found.group(1)
    user = await node.database.run(staff.get_user, "op")
    assert set(user.roles) == {"operator", "approver"}
    code, body, _ = await admin.get("/users")
    assert op_secret not in body
    # back to auditor only: no new secret
    code, body, _ = await admin.post("/users/op/roles", {"roles": ["auditor"]})
    assert code == 200 and 'id="totp-secret"' not in body
    # an unknown role is refused, and so is an admin dropping their own admin role
    code, body, _ = await admin.post("/users/op/roles", {"roles": ["root"]})
    assert code == 400 and "UnknownRole" in body
    code, body, _ = await admin.post("/users/ad/roles", {"roles": ["auditor"]})
    assert code == 400 and "BadRequest" in body
    assert set((await node.database.run(staff.get_user, "ad")).roles) == {"admin"}

    # TOTP reset of the approver: a new secret, the approver's session ended
    approver = await logged_in(box, "ap", secrets["ap"])
    code, body, _ = await admin.post("/users/ap/totp", {})
    assert code == 200 and 'id="totp-reset"' in body
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', body)
    assert found is not None and found.group(1) != secrets["ap"]
    code, body, _ = await approver.get("/held")
    assert code == 401 and "SessionExpired" in body
    fresh = Browser(box)
    code, body, _ = await fresh.login("ap", totp=code_for(node, found.group(1)))
    assert code == 302, body

    # not an admin: 403, nothing changed (the CSRF token is valid)
    code, body, _ = await fresh.post("/users/op/roles", {"roles": ["admin"]})
    assert code == 403 and "RoleForbidden" in body
    code, body, _ = await operator.post("/users/ap/totp", {})
    assert code == 403 and "RoleForbidden" in body
    assert set((await node.database.run(staff.get_user, "op")).roles) == {"auditor"}

    # without its CSRF token, the admin's POST is refused
    code, body, _ = await admin.post("/users/op/roles", {"roles": ["operator"]}, csrf=False)
    assert code == 403 and "CsrfRejected" in body

    changes = await node.database.run(audit.audit_entries, limit=10, action="role_change")
    assert [(e["actor"], e["target"]) for e in changes] == [("ad", "op"), ("ad", "op")]
    resets = await node.database.run(audit.audit_entries, limit=10, action="totp_reset")
    assert [(e["actor"], e["target"]) for e in resets] == [("ad", "ap")]


@pytest_twisted.ensureDeferred
async def test_held_provision_is_reviewed_and_approved_in_the_console(
    box: Any, setagaya_asks: Any
) -> None:
    """The approver sees the exact content (audited) and approves; the operator sees the
    queue, with the hold's time left, but gets 403 on the detail; the requester receives the
    provision."""
    node = box.nodes["meguro"]
    secrets = await add_users(node)
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    item = await held_item(node)
    number = item.transaction_number
    operator = await logged_in(box, "op", None)
    code, body, _ = await operator.get("/held")
    assert code == 200 and number in body and f'href="/held/{number}"' not in body
    assert '<td class="time-left nowrap">71時間59分</td>' in body or "72時間0分" in body
    code, body, _ = await operator.get(f"/held/{number}")
    assert code == 403 and "RoleForbidden" in body
    approver = await logged_in(box, "ap", secrets["ap"])
    code, body, _ = await approver.get(f"/held/{number}")
    assert code == 200 and "要介護状態区分" in body and "MEG-KAIGO-0201-DV01" in body
    viewed = await node.database.run(audit.audit_entries, limit=5, action="view_held_content")
    assert viewed[0]["actor"] == "ap" and viewed[0]["target"] == number
    # why it is held, who asks and the time left
    assert "自動応答不可" in body and 'id="flagged"' in body
    assert '<td id="requester">世田谷区' in body and "介護保険法による" in body
    assert 'id="time-left">71時間59分' in body or 'id="time-left">72時間0分' in body
    # the first step shows what will be sent and decides nothing
    code, body, _ = await approver.post(f"/held/{number}/approve", {})
    assert code == 200 and 'id="confirm"' in body and "MEG-KAIGO-0201-DV01" in body
    assert "世田谷区 に提供します" in body and 'name="confirmed" value="1"' in body
    assert (await held_item(node)).state == "held"
    code, _, headers = await approver.post(f"/held/{number}/approve", {"confirmed": "1"})
    assert code == 302
    location = headers.getRawHeaders(b"location")[0].decode()
    code, body, _ = await approver.get(location)
    assert code == 200 and f"処理通番 {number} を承認しました" in body and "世田谷区" in body
    # decided: no content shown any more, and none read
    before = len(await node.database.run(audit.audit_entries, limit=50, action="view_held_content"))
    code, body, _ = await approver.get(f"/held/{number}")
    assert code == 200 and 'id="content-withheld"' in body and "要介護状態区分" not in body
    assert 'id="approve"' not in body
    after = len(await node.database.run(audit.audit_entries, limit=50, action="view_held_content"))
    assert after == before
    code, body, _ = await approver.post(f"/held/{number}/approve", {})
    assert code == 409 and "HeldAlreadyDecided" in body
    status = await wait_for_state(setagaya_asks, query_id, "provided")
    assert status["result"]["records"][0]["record_id"] == "MEG-KAIGO-0201-DV01"
    code, body, _ = await approver.post(f"/held/{number}/approve", {})
    assert code == 409 or "HeldAlreadyDecided" in body


async def check_transaction_path(node: Any, browser: Browser, number: str) -> None:
    """The detail page shows the hub's and this node's records as one timeline, and this
    node's records alone (with a notice) when the hub cannot be asked."""
    path = await node.transaction_path(number)
    assert {entry["party"] for entry in path} == {"hub", node.institution.name}
    code, body, _ = await browser.get(f"/records/{number}?lang=en")
    assert code == 200 and 'id="path-fallback"' not in body
    timeline = body[body.index('<table id="timeline"') : body.index("</table>")]
    assert timeline.count('<tr class="party-') == len(path)
    assert timeline.count('class="party-hub"') == sum(e["party"] == "hub" for e in path) > 0
    party = f'<td class="party" data-party="{node.institution.name}">'
    assert f"{party}{node.institution.display_name}</td>" in timeline
    assert '<td class="party" data-party="hub">the hub</td>' in timeline
    assert "T0" not in timeline and " JST" in timeline  # Japan time, not ISO

    def unreachable(number: str) -> Any:
        from twisted.internet.defer import fail

        return fail(ConnectionRefusedError("hub down"))

    node.transaction_path = unreachable
    try:
        code, body, _ = await browser.get(f"/records/{number}")
    finally:
        del node.transaction_path
    assert code == 200 and 'id="path-fallback"' in body and "ConnectionRefusedError" in body
    timeline = body[body.index('<table id="timeline"') : body.index("</table>")]
    assert 'class="party-hub"' not in timeline and timeline.count('<tr class="party-') == sum(
        e["party"] != "hub" for e in path
    )


@pytest_twisted.ensureDeferred
async def test_records_search_detail_export_and_person_page(box: Any, setagaya_asks: Any) -> None:
    """An auditor finds a held provision's records by 処理通番 and by filters, opens its timeline,
    exports the CSV (audited), and sees the person's page."""
    node = box.nodes["meguro"]
    secrets = await add_users(node)
    query_id = await setagaya_asks.ask()
    status = await wait_for_state(setagaya_asks, query_id, "held")
    number = status["transaction_number"]
    auditor = await logged_in(box, "au", secrets["au"])
    code, body, _ = await auditor.get(f"/records?transaction_number={number}")
    assert code == 200 and f'href="/records/{number}"' in body
    code, body, _ = await auditor.get("/records?direction=incoming&status=held")
    assert code == 200
    code, body, _ = await auditor.get(f"/records/{number}")
    assert code == 200 and "timeline" in body
    await check_transaction_path(node, auditor, number)
    code, body, headers = await auditor.get(f"/records/export.csv?transaction_number={number}")
    assert code == 200 and number in body
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/csv")
    exported = await node.database.run(audit.audit_entries, limit=5, action="export")
    assert exported[0]["actor"] == "au"
    for malformed in ("date_from=notadate", "before=abc", "direction=sideways"):
        code, body, _ = await auditor.get(f"/records?{malformed}")
        assert code == 400 and "BadRequest" in body, malformed
    code, body, _ = await auditor.get("/audit?page=x")
    assert code == 400 and "BadRequest" in body
    code, body, _ = await auditor.get("/records/99999999999999999999")
    assert code == 404 and "UnknownTransaction" in body
    admin = await logged_in(box, "ad", secrets["ad"])
    code, body, _ = await admin.get("/persons/000000000010002")
    assert code == 200 and "MEG-KAIGO-0201-DV01" in body and 'id="fugo"' in body
    viewed = await node.database.run(audit.audit_entries, limit=1, action="view_person")
    assert (viewed[0]["actor"], viewed[0]["target"]) == ("ad", "000000000010002")
    code, _, _ = await admin.post(
        "/persons/000000000010002/flags/MEG-KAIGO-0201-DV01",
        {"suppressed": "0", "reason": "protection order lifted"},
    )
    assert code == 302
    changed = await node.database.run(audit.audit_entries, limit=5, action="flag_change")
    assert changed[0]["detail"]["reason"] == "protection order lifted"
    code, body, _ = await admin.get("/permitted-list?q=TM00000000000004")
    assert code == 200 and "TM00000000000004" in body
    code, body, _ = await admin.get("/")
    assert code == 200 and '<td class="figure" id="held_waiting">1</td>' in body


@pytest_twisted.ensureDeferred
async def test_an_unknown_address_is_a_coded_404_page(box: Any) -> None:
    """A page that does not exist answers 404 PageNotFound, not an internal error."""
    code, body, _ = await Browser(box).get("/favicon.ico")
    assert code == 404 and "PageNotFound" in body


@pytest_twisted.ensureDeferred
async def test_every_answer_asks_for_https_keeps_its_address_and_names_no_server(
    box: Any,
) -> None:
    """Pages, the login form, the stylesheet, a redirect and a coded 404 all carry HSTS and
    Referrer-Policy: no-referrer, and none says which server software answers."""
    browser = Browser(box)
    for path in ("/login", "/static/console.css", "/", "/favicon.ico"):
        code, _, headers = await browser.get(path)
        assert code in (200, 302, 401, 404), (path, code)
        assert headers.getRawHeaders(b"strict-transport-security") == [b"max-age=31536000"]
        assert headers.getRawHeaders(b"referrer-policy") == [b"no-referrer"]
        assert not headers.hasHeader(b"server"), (path, headers.getRawHeaders(b"server"))


@pytest_twisted.ensureDeferred
async def test_an_ended_hold_stays_listed_as_expired(box: Any, setagaya_asks: Any) -> None:
    """A hold refused at the end of its lifetime leaves the queue but stays on the held page,
    marked expired, with no link to its content."""
    node = box.nodes["meguro"]
    await add_users(node)
    query_id = await setagaya_asks.ask()
    await wait_for_state(setagaya_asks, query_id, "held")
    number = (await held_item(node)).transaction_number
    box.clock.advance(72 * 3600 + 60)  # the provider's sweep ends the hold
    await wait_for_state(setagaya_asks, query_id, "refused")
    operator = await logged_in(box, "op", None)
    code, body, _ = await operator.get("/held")
    assert code == 200
    ended = body[body.index('<table id="expired-holds">') :]
    assert number in ended and "期限切れ" in ended
    assert number not in body[: body.index('<table id="expired-holds">')]


@pytest_twisted.ensureDeferred
async def test_a_transactions_page_shows_the_faults_injected_on_its_messages(
    box: Any, meguro_care: Any
) -> None:
    """A provision whose answer was lost once (reset_peer, injected on purpose): the
    transaction's page lists the fault that hit its message, by kind and link."""
    from simulators.faults import Fault
    from tests.network import SETAGAYA
    from tests.test_flow import ask_tax

    secrets = await add_users(box.nodes["meguro"])
    box.faults.add(Fault("reset_peer", source=SETAGAYA, operation="provision", limit=1))
    submitted = await ask_tax(meguro_care)
    status = await meguro_care.wait_for_result(submitted["query_id"], timeout=30)
    number = status["transaction_number"]
    browser = await logged_in(box, "op", secrets["op"])
    code, body, _ = await browser.get(f"/records/{number}?lang=en")
    assert code == 200
    faults = body[body.index('<ul id="faults">') : body.index("</ul>", body.index('id="faults"'))]
    assert faults.count("<li>") == 1
    assert "<code>reset_peer</code>" in faults
    source = f'<span data-source="{SETAGAYA}">世田谷区</span>'
    assert f'{source} → <span data-destination="hub">' in faults
    assert " JST</strong>" in faults  # its time in Japan time
    box.faults.clear()
    other = await ask_tax(meguro_care)
    plain = await meguro_care.wait_for_result(other["query_id"], timeout=30)
    code, body, _ = await browser.get(f"/records/{plain['transaction_number']}?lang=en")
    assert 'id="faults"' not in body
