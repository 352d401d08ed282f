"""A scenario's staff: the staff users its staff actors are, what they do in the operator
console (a `decide` step, `console` steps) and what the audit logs hold of it.

Each staff actor (``actors: {setagaya-approver: {kind: staff, party: setagaya, roles:
[approver]}}``) is made a staff user of its institution when the scenario starts, by the
product's own ``middleware.staff.add_user`` (what ``renkei staff add`` runs) against the
party's database, with a random password and a TOTP secret; a `decide` step naming no
declared staff actor makes an approver of the provider for itself. Every staff user the
scenario made is disabled when it ends.

User names are the actors' names; against a network that is not the scenario's own (a
running one, where an earlier run made users of those names), each gets the suffix of the
run (``setagaya-approver.k3f9qz``), so no run clashes with another.

Each staff actor has a browser of its own (simulators/console_browser.py): it logs in with
its password and its authenticator's code, opens pages and submits their forms, over the
console's HTTPS like a person would, and the coded error a page shows is read from its
``data-error-code`` marker.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from codes import errors
from middleware import audit, staff
from middleware.clock import utc_now
from renkei.scenarios.outcomes import StepFailed
from renkei.scenarios.targets import Target, read_database
from simulators.console_browser import (
    Authenticator,
    ConsoleBrowser,
    ConsolePage,
    NoFreshCode,
    NoSuchForm,
)

__all__ = ["DEFAULT_APPROVER", "StaffActor", "StaffActors", "staff_user_name"]

LOG = Logger()
DEFAULT_APPROVER = "scenario-approver"  # who decides when a `decide` step names nobody
SUFFIX_LETTERS = string.ascii_lowercase + string.digits

# Looks up the 処理通番 of a query the scenario captured, by its name.
# Notes a request of an actor at a party for the report; its answer is filled in later.
NoteCall = Callable[[str, str, str], dict[str, Any]]


def staff_user_name(actor: str, suffix: str = "") -> str:
    """The staff user name of ``actor``: its name in the characters a user name may have
    (``middleware.staff.NAME_PATTERN``), then ``suffix``, at most 64 characters."""
    name = re.sub(r"[^a-z0-9._-]+", "-", actor.lower()).strip("-") or "staff"
    if not name[0].isalpha():
        name = "s" + name
    return name[: 64 - len(suffix)] + suffix


@dataclass
class StaffActor:
    """One staff actor: its name in the scenario, its institution and roles, the staff user
    it is there, and its browser."""

    name: str
    party: str
    roles: tuple[str, ...]
    user: str
    password: str
    authenticator: Authenticator
    browser: ConsoleBrowser
    made: bool = False  # the runner made its staff user (and disables it at the end)
    logged_in_once: bool = False


class StaffActors:
    """The staff actors of one scenario against its target."""

    def __init__(
        self,
        reactor: Any,
        target: Target,
        actors: dict[str, Any],
        steps: Iterable[dict[str, Any]],
        note: NoteCall,
    ) -> None:
        self._reactor = reactor
        self._target = target
        self._declared = {
            name: actor for name, actor in actors.items() if actor.get("kind") == "staff"
        }
        self._note = note
        self._suffix = (
            "" if target.fresh else "." + "".join(secrets.choice(SUFFIX_LETTERS) for _ in range(6))
        )
        self._actors: dict[tuple[str, str], StaffActor] = {}
        # The parties whose audit log a step expects, and how many entries each held when
        # the scenario started.
        self._audited = sorted(
            {party for step in steps for party in (step.get("expect") or {}).get("audit", {})}
        )
        self._audit_start: dict[str, int] = {}

    # -- the scenario's start and end ------------------------------------------------------

    async def begin(self) -> None:
        """Note where the audit logs stand, then make every declared staff actor a staff
        user of its institution."""
        for party in self._audited:
            url = self._target.config.institution(party).database
            self._audit_start[party] = await read_database(self._reactor, url, audit.count_audit)
        for name, declared in self._declared.items():
            await self._make(name, str(declared["party"]), tuple(declared["roles"]))

    async def end(self) -> None:
        """Disable every staff user the scenario made, and close the browsers. A user that
        cannot be disabled (its party's database gone) is logged, and the others still are."""
        for actor in self._actors.values():
            await actor.browser.close()
            if not actor.made:
                continue
            try:
                await self._in_database(
                    actor.party, staff.disable_user, self._now(), actor.user, actor=audit.SYSTEM
                )
            except Exception:
                LOG.failure(
                    "staff user {user} of {party} not disabled", user=actor.user, party=actor.party
                )

    def _now(self) -> Any:
        return utc_now(self._target.clock)

    async def _in_database(
        self, party: str, work: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any:
        """``work(connection, ...)`` in one transaction of ``party``'s database (as ``renkei
        staff add`` does it: the party may be running meanwhile)."""
        from middleware.storage import Database

        database = Database(self._reactor, self._target.config.institution(party).database, 1)
        database.start()
        try:
            return await database.run(work, *args, **kw)
        finally:
            database.stop()

    async def _make(self, name: str, party: str, roles: tuple[str, ...]) -> StaffActor:
        """Make ``name`` a staff user of ``party`` with ``roles`` (a random password, a TOTP
        secret), as ``renkei staff add`` does."""
        institution = self._target.config.institution(party)
        user = staff_user_name(name, self._suffix)
        password = secrets.token_urlsafe(18)
        secret = await self._in_database(
            party,
            staff.add_user,
            self._now(),
            user,
            name,
            password,
            list(roles),
            actor=audit.SYSTEM,
            with_totp=True,
        )
        assert secret is not None
        browser = ConsoleBrowser(self._reactor, self._target.config, institution, self._now)
        made = StaffActor(name, party, roles, user, password, Authenticator(secret), browser, True)
        self._actors[(name, party)] = made
        return made

    def _actor(self, name: str) -> StaffActor:
        """A declared staff actor."""
        declared = self._declared.get(name)
        if declared is None:
            raise StepFailed(f"{name!r} is not a staff actor of the scenario")
        return self._actors[(name, str(declared["party"]))]

    def user_name(self, name: str) -> str:
        """The staff user name of the declared staff actor ``name`` (``${user:NAME}``)."""
        return self._actor(name).user

    def user_of(self, name: str, party: str) -> str | None:
        """The staff user name of staff actor ``name`` at ``party``, if it is one."""
        actor = self._actors.get((name, party))
        return actor.user if actor is not None else None

    # -- in the console ----------------------------------------------------------------------

    async def _log_in(self, actor: StaffActor, how: str = "correct") -> ConsolePage:
        """Log ``actor`` in as a `console` step's ``login`` says: ``correct`` (its password
        and its authenticator's code), ``wrong_password``, ``wrong_totp`` or ``no_totp``."""
        password = actor.password if how != "wrong_password" else actor.password + "-wrong"
        totp = {"wrong_totp": "wrong", "no_totp": "none"}.get(how, "fresh")
        actor.logged_in_once = True
        try:
            return await actor.browser.login(actor.user, password, actor.authenticator, totp)
        except NoFreshCode as failure:
            raise StepFailed(f"{actor.name} cannot log in again yet: {failure}") from None

    async def decide(
        self, name: str | None, party: str, number: str, decision: str, reason: str | None
    ) -> str:
        """Staff actor ``name`` (a declared one, or an approver of ``party`` made for the
        step) opens the held provision ``number`` in ``party``'s console and approves or
        refuses it there, then confirms the decision on the page that shows what will be
        sent (logging in first when it has no live session)."""
        name = name or DEFAULT_APPROVER
        if name in self._declared:
            actor = self._actor(name)
            if actor.party != party:
                raise StepFailed(f"{name} is staff of {actor.party}, not of {party}")
        else:
            actor = self._actors.get((name, party)) or await self._make(name, party, ("approver",))
        call = self._note(name, party, f"{decision} {number} in the console")
        path = f"/held/{number}"
        if not actor.browser.has_session:
            await self._log_in(actor)
        page = await actor.browser.open(path)
        if page.error_code == errors.SESSION_EXPIRED.code:
            await self._log_in(actor)
            page = await actor.browser.open(path)
        action = f"{path}/{decision}"
        if page.error_code is None and page.form(action) is None:
            call["answer"] = "no form"
            raise StepFailed(f"the page of held provision {number} offers no {decision} form")
        if page.error_code is None:
            fields = {"reason": reason or "refused by the scenario"} if decision == "refuse" else {}
            page = await actor.browser.submit(action, fields)
        if page.error_code is None and page.form(action) is not None:
            # The confirmation page: what will be sent, and the button that confirms it.
            page = await actor.browser.submit(action)
        call["answer"] = page.error_code or "decided"
        if page.error_code is not None:
            raise StepFailed(f"the console refused to {decision} {number}: {page.error_code}")
        return f"{party}'s {name} ({actor.user}) decided {decision} on {number} in the console"

    async def console(self, argument: dict[str, Any]) -> str:
        """One `console` step: a staff actor logs in or out, opens a page, submits a form of
        the page it shows, or posts a form of its own, ``times`` times; each time the page
        must show the coded error ``refused`` (or none) and the texts of ``sees``."""
        actor = self._actor(argument["as"])
        refused = argument.get("refused")
        times = int(argument.get("times", 1))
        said = ""
        for _ in range(times):
            call = self._note(actor.name, actor.party, "console")  # noted before it acts
            what, page = await self._act(actor, argument)
            call["what"] = what
            call["answer"] = page.error_code or f"HTTP {page.status}"
            if page.error_code != refused:
                shown = page.error_code or f"no coded error ({page.path}, HTTP {page.status})"
                raise StepFailed(f"{what}: the page shows {shown}, expected {refused or 'none'}")
            for text in argument.get("sees", ()):
                wanted = str(text)
                if not page.shows(wanted):
                    raise StepFailed(f"{what}: the page ({page.path}) does not show {wanted!r}")
            said = f"{actor.name}: {what}: " + (
                f"refused {refused}" if refused else f"{page.path} (HTTP {page.status})"
            )
        return said + (f" ({times} times)" if times > 1 else "")

    async def _act(self, actor: StaffActor, argument: dict[str, Any]) -> tuple[str, ConsolePage]:
        """Take a `console` step's action once: what was done, and the page it ended on."""
        browser = actor.browser
        if "login" in argument:
            return f"login ({argument['login']})", await self._log_in(actor, argument["login"])
        if not actor.logged_in_once:  # a person opening the console logs in first
            page = await self._log_in(actor)
            if page.error_code is not None:
                raise StepFailed(f"{actor.name} could not log in: {page.error_code}")
        try:
            if "logout" in argument:
                if browser.page is None or browser.page.form("/logout") is None:
                    await browser.open("/")
                return "logout", await browser.submit("/logout")
            if "open" in argument:
                path = str(argument["open"])
                return f"open {path}", await browser.open(path)
            if "submit" in argument:
                form = argument["submit"]
                action = str(form["form"])
                fields = _form_fields(form.get("fields", {}))
                csrf = form.get("csrf", "form")
                what = f"submit {action}" + ("" if csrf == "form" else f" (CSRF token {csrf})")
                return what, await browser.submit(action, fields, csrf)
            posted = argument["post"]
            path = str(posted["to"])
            fields = _form_fields(posted.get("fields", {}))
            return f"post {path}", await browser.post(path, fields)
        except NoSuchForm as failure:
            raise StepFailed(str(failure)) from None

    # -- the audit logs ----------------------------------------------------------------------

    async def audit(
        self,
        expected: dict[str, list[dict[str, Any]]],
        numbers: set[str],
    ) -> str:
        """Check the audit entries each party of ``expected`` holds since the scenario
        started (the making and disabling of its staff users left out; against a network
        not its own, only the entries of its staff users and its 処理通番 ``numbers``):
        their actions, actors, targets and details, in order, and how many."""
        said = []
        for party, wanted in expected.items():
            entries = await self._audit_since(party, numbers)
            shown = "; ".join(self._entry_text(entry, party) for entry in entries) or "none"
            if len(entries) != len(wanted):
                raise StepFailed(
                    f"{party}'s audit log holds {len(entries)} entries since the start, "
                    f"expected {len(wanted)}: {shown}"
                )
            for number, (entry, expectation) in enumerate(zip(entries, wanted, strict=True), 1):
                problem = self._entry_problem(entry, expectation, party)
                if problem is not None:
                    raise StepFailed(f"{party}'s audit entry {number}: {problem} (log: {shown})")
            said.append(f"{party} audited {len(entries)}")
        return ", ".join(said)

    async def _audit_since(self, party: str, numbers: set[str]) -> list[dict[str, Any]]:
        start = self._audit_start[party]

        def since(connection: Any) -> list[dict[str, Any]]:
            count = audit.count_audit(connection) - start
            return list(reversed(audit.audit_entries(connection, limit=count))) if count else []

        url = self._target.config.institution(party).database
        entries = await read_database(self._reactor, url, since)
        users = {actor.user for actor in self._actors.values() if actor.party == party}
        made = {a.user for a in self._actors.values() if a.party == party and a.made}
        kept = []
        for entry in entries:
            if (
                entry["actor"] == audit.SYSTEM
                and entry["action"] in ("user_add", "user_disable")
                and entry["target"] in made
            ):
                continue  # the runner's own set-up
            if not self._target.fresh and not (
                entry["actor"] in users or entry["target"] in users | numbers
            ):
                continue  # someone else's, on a network shared with others
            kept.append(entry)
        return kept

    def _actor_name(self, user: str, party: str) -> str:
        """The scenario's name for a staff user (its user name when it is none of its)."""
        return next(
            (a.name for a in self._actors.values() if a.user == user and a.party == party), user
        )

    def _entry_text(self, entry: dict[str, Any], party: str) -> str:
        target = f" of {entry['target']}" if entry["target"] else ""
        return f"{entry['action']} by {self._actor_name(entry['actor'], party)}{target}"

    def _entry_problem(
        self, entry: dict[str, Any], expectation: dict[str, Any], party: str
    ) -> str | None:
        if entry["action"] != expectation["action"]:
            return f"{entry['action']}, expected {expectation['action']}"
        if "actor" in expectation:
            actor = str(expectation["actor"])
            wanted = self.user_of(actor, party) or actor
            if entry["actor"] != wanted:
                seen = self._actor_name(entry["actor"], party)
                return f"{entry['action']} by {seen}, expected by {actor}"
        if "target" in expectation:
            target = str(expectation["target"])
            if entry["target"] != target:
                return f"{entry['action']} of {entry['target']}, expected of {target}"
        for key, value in expectation.get("detail", {}).items():
            seen_value = (entry["detail"] or {}).get(key)
            if seen_value != value:
                return f"{entry['action']} with {key} {seen_value!r}, expected {value!r}"
        return None


def _form_fields(fields: dict[str, Any]) -> dict[str, str | list[str]]:
    """A form's fields as the browser sends them: text, or a list of texts."""
    return {
        key: [str(item) for item in value] if isinstance(value, list) else str(value)
        for key, value in fields.items()
    }
