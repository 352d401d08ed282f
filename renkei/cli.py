"""The ``renkei`` command: PKI set-up, the demo query and record checks.

An expected failure of any command ends it in one line with its code and what to do
(renkei/failures.py); anything else shows its traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import click

from codes import errors
from crypto.pki import InstitutionEntry, PkiLayout, init_pki
from middleware.business_statistics import GROUPS, figures, summary_of
from middleware.config import Config, ConfigError, load_config
from middleware.records import count_records, records_of_transaction, verify_records
from middleware.storage import Database
from middleware.tables import (
    hub_checkpoints,
    hub_record_head,
    hub_records,
    node_checkpoints,
    node_record_head,
    node_records,
    portal_checkpoints,
    portal_record_head,
    portal_records,
)
from renkei.failures import BOX, CommandFailed, CommandGroup, expected
from simulators.faults import KINDS as FAULT_KINDS

__all__ = ["main"]


def _config(path: str) -> Config:
    """The configuration at ``path`` (ConfigurationInvalid when it cannot be used)."""
    return load_config(Path(path))


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default="twistd.conf",
    show_default=True,
    help="The configuration file describing the network.",
)


@click.group(cls=CommandGroup)
def main() -> None:
    """renkei: an emulation of the My Number information-linkage network.

    An expected failure (the box not running, a wrong option, an unknown institution, a
    refusal) ends a command in one line, its code and what to do, with status 1 (2 for a
    wrong command line); docs/operations.md, "The renkei command"."""


@main.group()
def pki() -> None:
    """The test network's PKI."""


@pki.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@config_option
def pki_init(directory: Path, config_path: str) -> None:
    """Create the network CA, the hub's keys, every configured institution's keys and
    マイナポータル's in DIRECTORY. Only what is missing is created; nothing is overwritten."""
    config = _config(config_path)
    init_pki(
        directory,
        [
            InstitutionEntry(code=i.code, back_office_systems=i.back_office_systems)
            for i in config.institutions
        ],
        portal=config.portal.code if config.portal is not None else None,
    )
    portal = " and マイナポータル" if config.portal is not None else ""
    click.echo(f"PKI ready in {directory} for {len(config.institutions)} institutions{portal}")
    for member in config.outside_members:
        if not PkiLayout(directory).institution_encryption(member.code).certificate.exists():
            click.echo(
                f"outside member {member.name} ({member.display_name}) is not enrolled yet: "
                f"renkei pki enrol {member.name} --out FOLDER"
            )


@pki.command("enrol")
@click.argument("name")
@config_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The folder to hand to the member (it must not hold the files already).",
)
@click.option(
    "--csr-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="The member's own requests (tls.csr, signing.csr, encryption.csr); its keys stay "
    "with it. Without: keys are made here and handed over with the certificates.",
)
def pki_enrol(name: str, config_path: str, out: Path, csr_dir: Path | None) -> None:
    """Issue the TLS, signing and encryption certificates of the outside member NAME (an
    institution with external = true) from the network CA, and write them to a folder for
    it, with the network CA, the hub's signing certificate and member.json. Restart the hub
    (or the box) for it to list the new member."""
    from renkei.enrolment import enrol, outside_member

    config = _config(config_path)
    member = outside_member(config, name)
    try:
        written = enrol(config, member, out, csr_dir)
    except (OSError, ValueError) as failure:
        remedy = (
            "Give the member's requests: tls.csr and signing.csr of EC P-256 keys, "
            "encryption.csr of an RSA key of 2048 bits or more (docs/operations.md, "
            '"Outside members").'
            if csr_dir is not None
            else 'Give --out a new folder (docs/operations.md, "Outside members").'
        )
        raise _pki_refused(failure, csr_dir or out, remedy) from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"{member.name} ({member.display_name}, {member.code}) enrolled in {config.pki}")


@pki.command("revoke")
@click.argument("name")
@config_option
@click.option("--system", default=None, help="Withdraw this back-office system's certificate only.")
def pki_revoke(name: str, config_path: str, system: str | None) -> None:
    """Withdraw the certificates of the institution NAME (ours or an outside member: TLS,
    signing, encryption), or with --system of one of its back-office systems. They are
    listed in the issuing CA's revocation list, which every listener re-reads: a new
    connection with them fails the handshake, without a restart."""
    from crypto.pki import revoke

    config = _config(config_path)
    member = config.member(name)
    try:
        withdrawn = revoke(config.pki, member.code, system)
    except (OSError, ValueError) as failure:
        remedy = 'renkei pki init makes what is missing (docs/operations.md, "Revocation").'
        raise _pki_refused(failure, config.pki, remedy) from None
    for certificate in withdrawn:
        click.echo(
            f"revoked {certificate.subject.rfc4514_string()} (serial {certificate.serial_number:x})"
        )


def _pki_refused(failure: OSError | ValueError, path: Path, remedy: str) -> CommandFailed:
    """A PKI operation that could not be done: which file (or folder), why, what to do."""
    where = getattr(failure, "filename", None) or path
    detail = getattr(failure, "strerror", None) or str(failure)
    return CommandFailed.of(errors.FILE_UNUSABLE, remedy, path=where, detail=detail)


def _pki_of(config: Config) -> None:
    """Check that the network's PKI is made (the commands that reach the box need it)."""
    from crypto.pki import PkiLayout

    ca = PkiLayout(config.pki).ca().certificate
    if not ca.exists():
        raise CommandFailed.of(
            errors.FILE_UNUSABLE,
            f"Make it with renkei pki init {config.pki} -c {config.path} (make run does), or "
            "give -c the configuration the box runs with.",
            path=ca,
            detail="the network's PKI is not made yet",
        )


@main.command()
@config_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the result.")
def demo(config_path: str, timeout: float) -> None:
    """Send the demo query of the network in a box (started by `make run`) and print the
    decrypted provision, its 処理通番 and the records each party wrote."""
    config = _config(config_path)
    _pki_of(config)
    _react(lambda reactor: _run_demo(reactor, config, timeout))


def _react(work: Callable[[Any], Coroutine[Any, Any, None]]) -> None:
    """Run the coroutine ``work(reactor)`` on the reactor (``react``). An expected failure
    it raises (renkei/failures.py: a network in a box that does not answer, a coded
    refusal) ends the command in one line; anything else shows its traceback."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    failed: list[CommandFailed] = []

    async def guarded(reactor: Any) -> None:
        try:
            await work(reactor)
        except Exception as failure:
            refusal = expected(failure)
            if refusal is None:
                raise
            failed.append(refusal)

    try:
        react(lambda reactor: Deferred.fromCoroutine(guarded(reactor)))
    except SystemExit as ended:
        if ended.code not in (0, None):
            raise
    if failed:
        raise failed[0]


async def _run_demo(reactor: Any, config: Config, timeout: float) -> None:
    from simulators.back_office import BackOfficeClient

    if config.demo_data is None:
        raise CommandFailed.of(
            errors.CONFIGURATION_INVALID,
            "Add it (twistd.conf has one) and start the box again.",
            detail=f"{config.path} has no [demo] section",
        )
    ask = json.loads(config.demo_data.read_text(encoding="utf-8"))["demo_query"]
    requester = config.institution(ask["requester"])
    provider = config.institution(ask["provider"])
    client = BackOfficeClient(reactor, config, requester, ask["system"])
    try:
        submitted = await client.submit_query(
            integrated_address_number=ask["integrated_address_number"],
            procedure=ask["procedure"],
            information_name=ask["information_name"],
            provider=provider.code,
        )
        click.echo(
            f"{requester.display_name} ({requester.code}) → {provider.display_name} "
            f"({provider.code}): query {submitted['query_id']} submitted"
        )
        status = await client.wait_for_result(submitted["query_id"], timeout=timeout)
    finally:
        await client.close()
    _print_status(status)
    number = status["transaction_number"]
    _print_records(config, number)
    if status["state"] not in ("provided", "no_data"):
        sys.exit(1)


def _print_status(status: dict[str, Any]) -> None:
    click.echo(f"処理通番 (transaction number): {status['transaction_number']}")
    click.echo(f"state: {status['state']}")
    if status["error"]:
        error = status["error"]
        click.echo(f"error: {error['code']}: {error['message_en']} / {error['message_ja']}")
    result = status["result"]
    if result is None:
        return
    name = result["information_name"]
    click.echo(f"特定個人情報名: {name['code']} {name['name']}")
    for record in result["records"]:
        data_set = record["data_set"]
        click.echo(f"  データセット {data_set['code']} {data_set['name']} ({record['record_id']})")
        for item in record["items"]:
            click.echo(f"    {item['code']} {item['name']}: {item['value']}")


@contextmanager
def _database(url: str, migrations: Path | None = None) -> Iterator[Database]:
    """A party's database (migrated first with ``migrations``), stopped at the end; one
    that cannot be used ends the command with DatabaseUnavailable. Without ``migrations``
    (reading only), an SQLite database that does not exist is not made."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from twisted.internet import reactor

    from middleware.storage import migrate

    shown = make_url(url).render_as_string(hide_password=True)
    path = make_url(url).database
    if migrations is None and url.startswith("sqlite") and path and not Path(path).exists():
        raise CommandFailed.of(
            errors.DATABASE_UNAVAILABLE, database=shown, detail="it does not exist yet"
        )
    database: Database | None = None
    try:
        if migrations is not None:
            migrate(url, migrations)
        database = Database(reactor, url)
        yield database
    except SQLAlchemyError as failure:
        cause = getattr(failure, "orig", None) or failure
        detail = " ".join(str(cause).split())
        raise CommandFailed.of(errors.DATABASE_UNAVAILABLE, database=shown, detail=detail) from None
    finally:
        if database is not None:
            database.stop()


def _print_records(config: Config, number: str) -> None:
    parties: list[tuple[str, str, Any]] = []
    if config.network is not None:
        parties.append(("hub", config.network.database, hub_records))
    parties += [(i.display_name, i.database, node_records) for i in config.institutions]
    click.echo("情報提供等記録 (provision records):")
    for name, url, table in parties:
        with _database(url) as database:
            rows = database.run_blocking(records_of_transaction, table, number)
        for row in rows:
            click.echo(
                f"  [{name}] #{row['seq']} {_jst(row['recorded_at'].isoformat())} "
                f"{row['event']} {row['status']} requester={row['requester']} "
                f"provider={row['provider']} {row['information_name']}"
                + (f" error={row['error_code']}" if row["error_code"] else "")
            )


@main.group()
def records() -> None:
    """Provision records (情報提供等記録)."""


@records.command("verify")
@config_option
def records_verify(config_path: str) -> None:
    """Check every party's hash chain of provision records (from its newest signed
    checkpoint once purged); exit 1 on a break."""
    config = _config(config_path)
    parties: list[tuple[str, str, str, Any, Any, Any]] = []
    if config.network is not None:
        parties.append(
            ("hub", "hub", config.network.database, hub_records, hub_record_head, hub_checkpoints)
        )
    parties += [
        (i.name, i.code, i.database, node_records, node_record_head, node_checkpoints)
        for i in config.institutions
    ]
    if config.portal is not None:
        portal = config.portal
        parties.append(
            ("portal", portal.code, portal.database, portal_records, portal_record_head,
             portal_checkpoints)
        )  # fmt: skip
    broken = False
    for name, code, url, table, head, checkpoints in parties:
        with _database(url) as database:
            verified = database.run_blocking(
                verify_records, table, head, checkpoints, _trust(config, code)
            )
            count = database.run_blocking(count_records, table)
        if verified.intact:
            click.echo(f"{name}: {count} records, chain intact{_from_checkpoint(verified)}")
        else:
            broken = True
            click.echo(f"{name}: chain broken at record {verified.first_broken}{_why(verified)}")
    if broken:
        sys.exit(1)


def _trust(config: Config, code: str) -> Any:
    """What a party's checkpoints are checked against: the network CA and the party's code
    (None without the PKI: a chain never purged needs none)."""
    from crypto.pki import load_certificate
    from middleware.checkpoint import ChainTrust

    ca = PkiLayout(config.pki).ca().certificate
    return ChainTrust(load_certificate(ca), code) if ca.exists() else None


def _from_checkpoint(verified: Any) -> str:
    checkpoint = verified.checkpoint
    if checkpoint is None:
        return ""
    return (
        f" from its checkpoint after {checkpoint.link.seq}"
        f" (purged up to {_jst(checkpoint.recorded_at.isoformat())})"
    )


def _why(verified: Any) -> str:
    return f": {verified.problem}" if verified.problem else ""


# -- backup and restore ---------------------------------------------------------------------


def _party_to_copy(config: Config, institution_name: str | None, hub: bool) -> Any:
    """What `renkei backup` and `renkei restore` work on: one institution's node, or the hub."""
    if hub == (institution_name is not None):
        raise click.ClickException("give one party: --institution NAME, or --hub")
    if hub:
        from simulators.network.hub import party_database as hub_database

        if config.network is None:
            raise click.ClickException(f"{config.path} has no [network] (no hub)")
        return hub_database(config.network)
    from middleware.node import party_database

    try:
        return party_database(config.institution(institution_name or ""))
    except ConfigError as failure:
        raise click.ClickException(str(failure)) from None


_PARTY_OPTIONS = [
    click.option(
        "-i",
        "--institution",
        "institution_name",
        default=None,
        help="The institution (section name, e.g. meguro, or code) whose database it is.",
    ),
    click.option("--hub", is_flag=True, help="The hub's database instead."),
]


def _party_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_PARTY_OPTIONS):
        command = option(command)
    return command


def _chains(heads: Any) -> str:
    names = {"provision_record": "records", "audit_record": "audit entries"}
    return ", ".join(f"{names.get(name, name)} up to {head.seq}" for name, head in heads.items())


@main.command("backup")
@click.argument("destination", type=click.Path(file_okay=False, path_type=Path))
@config_option
@_party_options
def backup(destination: Path, config_path: str, institution_name: str | None, hub: bool) -> None:
    """Copy a party's database into DESTINATION (a new or empty directory) with its manifest,
    while the party runs: SQLite's online backup, or pg_dump in one snapshot."""
    from middleware.backup import back_up

    config = _config(config_path)
    party = _party_to_copy(config, institution_name, hub)
    manifest = back_up(party, destination, _now())
    click.echo(
        f"{party.name}: backed up into {destination} ({manifest.file}, {manifest.size} bytes,"
        f" made {_jst(manifest.made_at.isoformat())}; {_chains(manifest.chains)})"
    )


@main.command("restore")
@click.argument("source", type=click.Path(file_okay=False, path_type=Path))
@config_option
@_party_options
def restore(source: Path, config_path: str, institution_name: str | None, hub: bool) -> None:
    """Put the backup in SOURCE in place of a party's database, which must not be in use
    (stop the party first); the copy's chains are verified as `records verify` and `audit
    verify` do before anything is replaced, and the database replaced is kept aside."""
    from middleware.backup import restore as restore_backup

    config = _config(config_path)
    party = _party_to_copy(config, institution_name, hub)
    restored = restore_backup(party, source, _trust(config, party.code), _now())
    made = _jst(restored.manifest.made_at.isoformat())
    click.echo(
        f"{party.name}: restored from {source} (made {made}; {_chains(restored.manifest.chains)}),"
        " every chain intact"
    )
    if restored.replaced is not None:
        click.echo(f"{party.name}: the database it replaced is kept as {restored.replaced}")


@records.command("statistics")
@config_option
@click.option(
    "--party",
    "party",
    default=None,
    help="hub, or an institution (section name or code); default: every party.",
)
@click.option("--from", "since", default="", help="The first month, YYYY-MM (Japan time).")
@click.option(
    "--to", "until", default="", help="The last month, YYYY-MM; default: this month in Japan."
)
@click.option(
    "--by",
    "group",
    type=click.Choice(GROUPS),
    default="month",
    show_default=True,
    help="What to count by (counterpart: a query's provider, a provision's requester).",
)
def records_statistics(
    config_path: str, party: str | None, since: str, until: str, group: str
) -> None:
    """業務統計: each party's queries made and provisions given over a period (by default the
    twelve months up to --to), counted from its summary, never from its records: one line per
    side, value and outcome (docs/operations.md, "Business statistics")."""
    from adapters.console.statistics import period_of

    config = _config(config_path)
    period = period_of(since, until, _now())
    parties: list[tuple[str, str, Any]] = []
    if config.network is not None and party in (None, "hub"):
        parties.append(("hub", config.network.database, summary_of(hub_records)))
    for institution in config.institutions:
        if party in (None, institution.name, institution.code):
            parties.append((institution.name, institution.database, summary_of(node_records)))
    if not parties:
        raise click.ClickException(f"no party {party} in {config_path}")
    for name, url, summary in parties:
        with _database(url) as database:
            found = database.run_blocking(figures, summary, period.since, period.until, group)
        click.echo(f"{name}: {period.since} to {period.until}, by {group}")
        for f in found:
            click.echo(f"  {f.side:9} {f.value or '-':16} {f.outcome:9} {f.count:>9,}")
        if not found:
            click.echo("  (none)")


# -- staff and the audit log ------------------------------------------------------------------

institution_option = click.option(
    "-i",
    "--institution",
    "institution_name",
    required=True,
    help="The institution (section name, e.g. meguro, or code) whose database to use.",
)


def _node_database(config: Config, name: str) -> tuple[Any, AbstractContextManager[Database]]:
    """An institution and its database (migrated to the current schema when opened)."""
    from middleware.node import MIGRATIONS

    institution = config.institution(name)
    return institution, _database(institution.database, MIGRATIONS)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0)


def _password(password_file: Path | None, generate: bool) -> tuple[str, bool]:
    """The password from a file, generated, or asked for; and whether to print it."""
    import secrets

    if password_file is not None and password_file.exists():
        return password_file.read_text(encoding="utf-8").strip(), False
    if generate or password_file is not None:
        password = secrets.token_urlsafe(15)
        if password_file is not None:
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(password + "\n", encoding="utf-8")
        return password, True
    return click.prompt("Password", hide_input=True, confirmation_prompt=True), False


@main.group("staff")
def staff_group() -> None:
    """Staff users of an institution's console (first set-up and recovery)."""


@staff_group.command("add")
@click.argument("name")
@config_option
@institution_option
@click.option("--roles", required=True, help='Space-separated roles, e.g. "admin approver".')
@click.option("--display-name", default=None, help="The person's name (default: NAME).")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the password from this file; when it does not exist, generate one into it.",
)
@click.option("--generate-password", is_flag=True, help="Generate a password and print it.")
@click.option("--totp", "with_totp", is_flag=True, help="Enrol TOTP even if no role needs it.")
@click.option("--if-absent", is_flag=True, help="Do nothing (exit 0) when the user exists.")
def staff_add(
    name: str,
    config_path: str,
    institution_name: str,
    roles: str,
    display_name: str | None,
    password_file: Path | None,
    generate_password: bool,
    with_totp: bool,
    if_absent: bool,
) -> None:
    """Add staff user NAME; print its TOTP secret and provisioning URI when it has one."""
    from middleware import audit, staff

    config = _config(config_path)
    institution, opened = _node_database(config, institution_name)
    with opened as database:
        exists = any(u["name"] == name for u in database.run_blocking(staff.list_users))
        if exists and if_absent:
            click.echo(f"staff user {name} already exists at {institution.name}")
            return
        password, show = _password(password_file, generate_password)
        secret = database.run_blocking(
            staff.add_user,
            _now(),
            name,
            display_name or name,
            password,
            roles,
            actor=audit.SYSTEM,
            with_totp=with_totp,
        )
    click.echo(f"staff user {name} added at {institution.display_name} ({institution.name})")
    if institution.console_address:
        click.echo(f"console:  {institution.console_address}/")
    click.echo(f"user:     {name}")
    if show:
        click.echo(f"password: {password}")
    elif password_file is not None:
        click.echo(f"password: in {password_file}")
    if secret is not None:
        click.echo(f"TOTP secret: {secret}")
        click.echo(f"TOTP URI:    {staff.totp_provisioning_uri(name, secret, institution.name)}")


@staff_group.command("list")
@config_option
@institution_option
def staff_list(config_path: str, institution_name: str) -> None:
    """List the staff users of an institution."""
    from middleware import staff

    config = _config(config_path)
    _, opened = _node_database(config, institution_name)
    with opened as database:
        users = database.run_blocking(staff.list_users)
    for user in users:
        flags = []
        if user["totp_enabled"]:
            flags.append("totp")
        if user["disabled"]:
            flags.append("disabled")
        if user["locked_until"] is not None:
            flags.append(f"locked until {_jst(user['locked_until'].isoformat())}")
        click.echo(
            f"{user['name']}\t{user['display_name']}\t{' '.join(user['roles'])}\t{' '.join(flags)}"
        )


@staff_group.command("disable")
@click.argument("name")
@config_option
@institution_option
def staff_disable(name: str, config_path: str, institution_name: str) -> None:
    """Disable staff user NAME for good and end its sessions."""
    from middleware import audit, staff

    config = _config(config_path)
    _, opened = _node_database(config, institution_name)
    with opened as database:
        database.run_blocking(staff.disable_user, _now(), name, actor=audit.SYSTEM)
    click.echo(f"staff user {name} disabled")


@staff_group.command("reset-password")
@click.argument("name")
@config_option
@institution_option
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Read the new password from this file; when it does not exist, generate one into it.",
)
@click.option("--generate-password", is_flag=True, help="Generate a password and print it.")
def staff_reset_password(
    name: str,
    config_path: str,
    institution_name: str,
    password_file: Path | None,
    generate_password: bool,
) -> None:
    """Set a new password for NAME, clear its lockout and end its sessions. The first
    password that make run kept in var/consoles/INSTITUTION.txt no longer holds then."""
    from middleware import audit, staff

    config = _config(config_path)
    _, opened = _node_database(config, institution_name)
    password, show = _password(password_file, generate_password)
    with opened as database:
        database.run_blocking(staff.reset_password, _now(), name, password, actor=audit.SYSTEM)
    click.echo(f"password of {name} reset")
    if show:
        click.echo(f"password: {password}")


@main.group("audit")
def audit_group() -> None:
    """The staff audit log."""


@audit_group.command("verify")
@config_option
@institution_option
def audit_verify(config_path: str, institution_name: str) -> None:
    """Check an institution's audit-log hash chain (from its newest signed checkpoint once
    purged); exit 1 on a break."""
    from middleware import audit

    config = _config(config_path)
    institution, opened = _node_database(config, institution_name)
    with opened as database:
        verified = database.run_blocking(audit.audit_verification, _trust(config, institution.code))
        count = database.run_blocking(audit.count_audit)
    if verified.intact:
        click.echo(
            f"{institution.name}: {count} audit entries, chain intact{_from_checkpoint(verified)}"
        )
    else:
        click.echo(
            f"{institution.name}: audit chain broken at entry {verified.first_broken}"
            + _why(verified)
        )
        sys.exit(1)


# -- bulk queries (一括照会) ------------------------------------------------------------------


@main.command("bulk-query")
@click.argument(
    "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
@config_option
@click.option(
    "-i",
    "--institution",
    "institution_name",
    required=True,
    help="The institution (section name, e.g. meguro, or code) whose node to send FILE to.",
)
@click.option(
    "-s",
    "--system",
    required=True,
    help="The back-office system (e.g. care-insurance) whose client certificate to present.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the result file (default: FILE.result.csv, with --resume ID.result.csv).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the result file if it exists (without: an existing one is kept, and nothing "
    "is sent).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the end and download the result, or print the bulk query's id and return.",
)
@click.option(
    "--interval", default=1.0, show_default=True, help="Seconds between two progress polls."
)
@click.option(
    "--timeout",
    default=None,
    type=float,
    help="Give up waiting after this many seconds (default: wait as long as it runs).",
)
@click.option(
    "--resume",
    "resume_id",
    default=None,
    metavar="ID",
    help="Follow the bulk query with this id (sent before) instead of sending FILE.",
)
@click.option(
    "--retry-for",
    default=300.0,
    show_default=True,
    help="Seconds to keep trying while the node does not answer (it may be restarting).",
)
def bulk_query(
    file: Path | None,
    config_path: str,
    institution_name: str,
    system: str,
    output: Path | None,
    force: bool,
    wait: bool,
    interval: float,
    timeout: float | None,
    resume_id: str | None,
    retry_for: float,
) -> None:
    """Send FILE (the 18-field bulk-query CSV, UTF-8 or Shift_JIS) to the institution's node
    over its back-office API, with mutual TLS as back-office SYSTEM, or follow an earlier one
    (--resume ID). Unless --no-wait, show a progress bar until every line has ended, then save
    the result file (CSV in the input's encoding). While the node does not answer (a restart)
    it tries again for up to --retry-for seconds: the file is sent under one Idempotency-Key,
    so sending it again never makes a second bulk query. An existing result file is kept
    (nothing is sent) unless --force. A refusal, or a file whose every line is invalid, exits
    with status 1; a file with some invalid lines says how many. See docs/bulk-query.md."""
    import time
    import uuid

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if (file is None) == (resume_id is None):
        raise click.UsageError("give FILE, or --resume ID to follow an earlier bulk query")
    config = _config(config_path)
    institution = config.institution(institution_name)
    target = output or (
        file.with_name(file.name + ".result.csv")
        if file is not None
        else Path(f"{resume_id}.result.csv")
    )
    if wait and not force and target.exists():
        raise CommandFailed.of(errors.RESULT_FILE_EXISTS, path=target)
    node = _BackOfficeConnection(config, institution, system, retry_for)
    resume = f"renkei bulk-query --resume {{id}} -c {config_path} -i {institution_name} -s {system}"
    if file is not None:
        key = str(uuid.uuid4())  # one per invocation: every resend is the same bulk query
        accepted = node.request("POST", "/bulk-queries", file.read_bytes(), idempotency_key=key)
        bulk_query_id = accepted["bulk_query_id"]
        click.echo(
            f"bulk query {bulk_query_id}: {accepted['lines']} lines, {accepted['invalid']} invalid"
        )
        if not wait and accepted["invalid"] == accepted["lines"]:
            raise _every_line_invalid(
                file, accepted["lines"], f"{resume.format(id=bulk_query_id)} saves it"
            )
    else:
        assert resume_id is not None
        bulk_query_id = resume_id
        accepted = node.request("GET", f"/bulk-queries/{bulk_query_id}")
        click.echo(f"bulk query {bulk_query_id}: {accepted['lines']} lines, {accepted['state']}")
    if not wait:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("一括照会", total=accepted["lines"])
        while True:
            progress = node.request("GET", f"/bulk-queries/{bulk_query_id}")
            bar.update(task, completed=progress["ended"])
            if progress["state"] == "ended":
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise CommandFailed.of(
                    errors.WAIT_TIMED_OUT,
                    f"It goes on: {resume.format(id=bulk_query_id)} follows it to its end.",
                    detail=f"bulk query {bulk_query_id} still running after {timeout:g} s "
                    f"({progress['ended']} of {progress['lines']} lines ended)",
                )
            time.sleep(interval)
    counts = ", ".join(f"{state} {count}" for state, count in progress["by_state"].items())
    click.echo(f"ended: {counts}")
    content = node.request("GET", f"/bulk-queries/{bulk_query_id}/result", raw=True)
    try:
        with target.open("wb" if force else "xb") as written:
            written.write(content)
    except FileExistsError:  # made meanwhile, by someone else
        raise CommandFailed.of(
            errors.RESULT_FILE_EXISTS,
            f"{resume.format(id=bulk_query_id)} -o OTHER saves it elsewhere, or give --force.",
            path=target,
        ) from None
    click.echo(f"result file: {target}")
    invalid = progress["invalid"]
    if invalid and invalid == progress["lines"]:
        raise _every_line_invalid(file, invalid, f"{target} says why for each")
    if invalid:
        click.echo(
            f"{invalid} of {progress['lines']} lines refused as invalid ({INVALID_LINE}): "
            f"{target} says why for each (docs/bulk-query.md, §1)"
        )


INVALID_LINE = errors.BULK_QUERY_LINE_INVALID.code


def _every_line_invalid(file: Path | None, lines: int, result: str) -> CommandFailed:
    """The failure of a bulk query none of whose ``lines`` could be sent."""
    what = f"of {file} " if file is not None else ""
    return CommandFailed(
        INVALID_LINE,
        f"every line {what}({lines}) was refused as invalid and nothing was asked; the result "
        f"file: {result}.",
        "Fix the lines (docs/bulk-query.md, §1) and send the file again.",
    )


class _NodeUnreachable(Exception):
    """The node did not answer (refused the connection, closed it, timed out)."""


class _BackOfficeConnection:
    """A synchronous back-office client (the CLI's): mutual TLS with the system's certificate,
    the node's name checked as i<code>.renkei.test, whatever address reaches it."""

    def __init__(
        self, config: Config, institution: Any, system: str, retry_for: float = 0.0
    ) -> None:
        import ssl

        from adapters.network_link import host_and_port
        from crypto.pki import PkiLayout, server_name_of_institution

        layout = PkiLayout(config.pki)
        client = layout.back_office_client(institution.code, system)
        if not client.certificate.exists():
            systems = ", ".join(institution.back_office_systems)
            raise CommandFailed.of(
                errors.FILE_UNUSABLE,
                f"Give --system one of {institution.name}'s systems ({systems}); the PKI is made "
                f"by renkei pki init {config.pki} -c {config.path} (make run does).",
                path=client.certificate,
                detail=f"no client certificate of the system {system} at {institution.name}",
            )
        context = ssl.create_default_context(cafile=str(layout.ca().certificate))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(client.certificate), str(client.key))
        self._context = context
        self._host, self._port = host_and_port(institution.back_office_address)
        self._server_name = server_name_of_institution(institution.code)
        self._retry_for = retry_for
        address = institution.back_office_address
        self._where = f"the back-office API of {institution.name} at {address}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        raw: bool = False,
        idempotency_key: str | None = None,
    ) -> Any:
        """One request; the JSON answer (or bytes with ``raw``). While the node does not
        answer, tried again (every 1 to 10 s) for up to ``retry_for`` seconds."""
        import time

        deadline = time.monotonic() + self._retry_for
        pause = 1.0
        while True:
            try:
                return self._request_once(method, path, body, raw, idempotency_key)
            except _NodeUnreachable as failure:
                if time.monotonic() + pause > deadline:
                    detail = f"{self._where} did not answer ({failure})"
                    raise CommandFailed.of(errors.NETWORK_UNAVAILABLE, detail=detail) from None
                click.echo(f"the node did not answer ({failure}); trying again", err=True)
                time.sleep(pause)
                pause = min(pause * 2, 10.0)

    def _request_once(
        self,
        method: str,
        path: str,
        body: bytes | None,
        raw: bool,
        idempotency_key: str | None,
    ) -> Any:
        """One request on a fresh connection."""
        import http.client
        import socket

        connection = http.client.HTTPConnection(self._host, self._port, timeout=120)
        try:
            plain = socket.create_connection((self._host, self._port), timeout=120)
            connection.sock = self._context.wrap_socket(plain, server_hostname=self._server_name)
            headers = {"Content-Type": "text/csv"} if body is not None else {}
            if idempotency_key is not None:
                headers["Idempotency-Key"] = idempotency_key
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as failure:
            raise _NodeUnreachable(str(failure) or type(failure).__name__) from None
        finally:
            connection.close()
        if response.status >= 400:
            try:
                error = json.loads(content)["error"]
            except (ValueError, KeyError, TypeError):
                raise CommandFailed(
                    None, f"{self._where} answered HTTP {response.status} without a coded error"
                ) from None
            raise CommandFailed.answered(error)
        return content if raw else json.loads(content)


@main.command()
@config_option
@click.option(
    "--municipality",
    type=click.Choice(["meguro", "setagaya", "shibuya", "all"]),
    default="meguro",
    show_default=True,
    help="Whose population to generate; all: the three wards, movers between them kept.",
)
@click.option(
    "--size",
    default="small",
    show_default=True,
    help="small, full (the realistic size) or a number of residents (one ward only).",
)
@click.option("--seed", default=20261126, show_default=True, help="The generator's seed.")
def populate(config_path: str, municipality: str, size: str, seed: int) -> None:
    """Generate a population (docs/population.md) and load it into the running network in a
    box: residents into the 住基ネット simulator's database, then each institution's persons
    (符号 acquired) and 副本 through its back-office API, with progress."""
    if not (size in ("small", "full") or size.isdigit()):
        raise click.BadParameter("small, full or a number", param_hint="--size")
    if municipality == "all" and size.isdigit():
        raise click.BadParameter("with --municipality all: small or full", param_hint="--size")
    config = _config(config_path)
    _pki_of(config)
    _react(lambda reactor: _run_populate(reactor, config, municipality, size, seed))


async def _run_populate(
    reactor: Any, config: Config, municipality: str, size: str, seed: int
) -> None:
    from rich.progress import Progress

    from simulators import seeding
    from simulators.back_office import BackOfficeClient, BackOfficeError
    from simulators.network import jukinet
    from simulators.population import generate, world

    if config.network is None:
        raise CommandFailed.of(
            errors.CONFIGURATION_INVALID,
            "Give -c the configuration of the whole network (twistd.conf).",
            detail=f"{config.path} has no [network] section (the hub and its registry)",
        )
    amount: str | int = int(size) if size.isdigit() else size
    if municipality == "all":
        generated = world(size, seed)
    else:
        generated = {municipality: generate(municipality, amount, seed)}
    numbers = seeding.residents(generated)
    # Nothing is written before every node that gets persons answers (a box not running
    # would otherwise get residents at the registry and nothing else).
    holdings = {i.name: seeding.holdings(i, generated) for i in config.institutions}
    for institution in config.institutions:
        if holdings[institution.name]:
            client = BackOfficeClient(
                reactor, config, institution, institution.back_office_systems[0]
            )
            try:
                await client.request("GET", "/openapi.json")
            finally:
                await client.close()
    with _database(config.network.database) as registry:
        registry.start()
        added = await registry.run(jukinet.register_residents, numbers)
    click.echo(
        f"住基ネット simulator: {added:,} residents added ({len(numbers):,} in the population)"
    )
    with Progress() as progress:
        for institution in config.institutions:
            held = holdings[institution.name]
            if not held:
                continue
            records = sum(len(h.records) for h in held)
            persons_task = progress.add_task(f"{institution.display_name} persons", total=len(held))
            records_task = progress.add_task(f"{institution.display_name} 副本", total=records)
            tasks = {"persons": persons_task, "records": records_task}
            try:
                await seeding.register_holdings(
                    reactor, config, institution, held, _advance(progress, tasks)
                )
            except BackOfficeError as refusal:
                failed = CommandFailed.answered(refusal.error)
                message = f"{institution.name}: {failed.message}"
                raise CommandFailed(failed.code, message, failed.remedy) from None


def _advance(progress: Any, tasks: dict[str, Any]) -> Callable[[str, int], None]:
    """A seeding progress callback that moves the bar of ``what`` by ``n``."""

    def advance(what: str, n: int) -> None:
        progress.advance(tasks[what], n)

    return advance


@main.command(name="use-case")
@config_option
@click.argument("number", type=click.IntRange(1, 4))
def use_case(config_path: str, number: int) -> None:
    """Run care-insurance use case NUMBER against the running network in a box (its
    [population] loaded) and print what happened: 1 premium assessment (bulk query of
    movers-in's local tax), 2 a move from Setagaya (Setagaya's certification), 3 a move to
    Shibuya (Meguro's 副本; a DV-protected person's provision held), 4 premium stage check
    (welfare office and pension-office institution)."""
    config = _config(config_path)
    _pki_of(config)
    _react(lambda reactor: _run_use_case(reactor, config, number))


async def _run_use_case(reactor: Any, config: Config, number: int) -> None:
    from simulators import use_cases

    try:
        persons = use_cases.population_of(config)
        outcome = await use_cases.USE_CASES[number](reactor, config, persons)
    except LookupError as failure:
        if type(failure) is not LookupError:  # a KeyError, an IndexError: a bug
            raise
        raise CommandFailed.of(
            errors.CONFIGURATION_INVALID,
            "Give -c the configuration of the box (twistd.conf has what the use cases need).",
            detail=str(failure),
        ) from None
    click.echo(outcome.title)
    for step in outcome.steps:
        click.echo(f"- {step}")
    for status in outcome.statuses:
        if "query_id" in status:
            click.echo("")
            _print_status(status)
    if outcome.result_file is not None:
        click.echo("")
        click.echo(outcome.result_file.decode(outcome.result_encoding))


# -- the control API: the network's clock and faults (docs/control.md) --------------------------


def _control(config: Config, method: str, path: str, body: Any = None, timeout: float = 60) -> Any:
    """One request to the box's control API, with its token; the JSON answer (a refusal ends
    the command with its code and messages, status 1)."""
    import http.client
    from urllib.parse import urlsplit

    from renkei.control import read_token

    if config.control is None:
        raise CommandFailed.of(
            errors.CONFIGURATION_INVALID,
            "Add one (twistd.conf has it; docs/control.md) and start the box again.",
            detail=f"{config.path} has no [control] section",
        )
    try:
        token = read_token(config.control.token)
    except OSError:
        raise CommandFailed.of(
            errors.NETWORK_UNAVAILABLE,
            f"{BOX}.",
            detail=f"no control token at {config.control.token}: the box has not started",
        ) from None
    address = urlsplit(config.control.address)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}"}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        content = response.read()
    except (OSError, http.client.HTTPException) as failure:
        raise CommandFailed.of(
            errors.NETWORK_UNAVAILABLE,
            detail=f"the control API at {config.control.address} did not answer ({failure})",
        ) from None
    finally:
        connection.close()
    answer = json.loads(content)
    if response.status >= 400:
        raise CommandFailed.answered(answer["error"])
    return answer


def _party_code(config: Config, name: str | None) -> str | None:
    """A party's network code from its name (``hub``, ``meguro``) or code."""
    from middleware.network import HUB

    if name is None or name == HUB:
        return name
    try:
        return config.member(name).code
    except ConfigError:
        names = ", ".join([HUB, *(i.name for i in config.members)])
        raise click.BadParameter(f"no party {name!r} (one of {names})") from None


def _party_name(config: Config, code: str | None) -> str:
    from middleware.network import HUB

    if code is None:
        return "any party"
    if code == HUB:
        return HUB
    for member in config.members:
        if member.code == code:
            return f"{member.name} ({member.display_name})"
    return code


def _jst(iso_time: str) -> str:
    from datetime import datetime

    from middleware.replica import JST

    return datetime.fromisoformat(iso_time).astimezone(JST).strftime("%Y-%m-%d %H:%M:%S JST")


def _print_clock(config: Config, view: dict[str, Any]) -> None:
    from datetime import timedelta

    offset = view["offset"]
    ahead = (
        "real time"
        if abs(offset) < 1
        else f"{timedelta(seconds=round(abs(offset)))} {'ahead of' if offset > 0 else 'behind'}"
        " real time"
    )
    state = "frozen" if view["frozen"] else "running"
    click.echo(f"network time: {_jst(view['now'])} ({view['now']}), {state}, {ahead}")
    for name, party in view["parties"].items():
        skew = f" (skew {party['skew']:+g} s)" if party["skew"] else ""
        click.echo(f"  {name:<10} {_jst(party['now'])}{skew}")
    for name in view["unreachable"]:
        click.echo(f"  {name:<10} not reached (not running?); it follows when it starts")


@main.group("clock")
def clock_group() -> None:
    """Show and move the network's one clock, for every party (docs/control.md)."""


@clock_group.command("show")
@config_option
def clock_show(config_path: str) -> None:
    """The network time and each party's clock (in Japan time)."""
    config = _config(config_path)
    _print_clock(config, _control(config, "GET", "/clock"))


@clock_group.command("freeze")
@config_option
def clock_freeze(config_path: str) -> None:
    """Stop the network's clock: timers fire only when it is advanced or set."""
    config = _config(config_path)
    _print_clock(config, _control(config, "POST", "/clock/freeze", {}))


@clock_group.command("resume")
@config_option
def clock_resume(config_path: str) -> None:
    """Let the network's clock run again from where it stands."""
    config = _config(config_path)
    _print_clock(config, _control(config, "POST", "/clock/resume", {}))


@clock_group.command("advance")
@click.argument("duration")
@config_option
def clock_advance(duration: str, config_path: str) -> None:
    """Move the network's clock forward by DURATION (8d, 1h30m, 90s) and fire every timer of
    every party now due (permits, lists, held provisions, retention, retries)."""
    from codes.errors import RenkeiError
    from renkei.control import parse_duration

    config = _config(config_path)
    try:
        seconds = parse_duration(duration)
    except RenkeiError as refusal:
        raise click.BadParameter(refusal.message_en, param_hint="DURATION") from None
    _print_clock(config, _control(config, "POST", "/clock/advance", {"seconds": seconds}))


@clock_group.command("set")
@click.argument("moment")
@config_option
def clock_set(moment: str, config_path: str) -> None:
    """Put the network's clock at MOMENT (ISO 8601, e.g. 2027-04-01T09:00+09:00; Japan time
    when no offset is given)."""
    config = _config(config_path)
    _print_clock(config, _control(config, "POST", "/clock/set", {"at": moment}))


@main.group("faults")
def faults_group() -> None:
    """Inject faults on the network's links (docs/control.md)."""


@faults_group.command("add")
@click.argument(
    "kind",
    type=click.Choice(FAULT_KINDS),
)
@config_option
@click.option("--from", "source", default=None, help="The sending party (hub or a name).")
@click.option("--to", "destination", default=None, help="The receiving party.")
@click.option(
    "--operation",
    default=None,
    help="The message kind: query, query_bundle, provision_request, provision_request_bundle, "
    "provision, provision_bundle, fugo, permitted_list, records.",
)
@click.option("--probability", type=float, default=1.0, show_default=True)
@click.option(
    "--latency", default="0", help="latency, drop, timeout; reorder's window: e.g. 50ms, 2s."
)
@click.option("--jitter", default="0", help="latency: ± this much, e.g. 50ms.")
@click.option("--limit", type=int, default=None, help="Hit at most this many messages.")
@click.option("--offset", default="0", help="skew: the party's clock runs this far ahead.")
def faults_add(
    kind: str,
    config_path: str,
    source: str | None,
    destination: str | None,
    operation: str | None,
    probability: float,
    latency: str,
    jitter: str,
    limit: int | None,
    offset: str,
) -> None:
    """Put a fault of KIND in force on the links it matches; prints its name."""
    from codes.errors import RenkeiError
    from renkei.control import parse_duration

    config = _config(config_path)
    try:
        seconds = {
            name: parse_duration(value)
            for name, value in (("latency", latency), ("jitter", jitter))
        }
        skew = parse_duration(offset.removeprefix("-")) * (-1 if offset.startswith("-") else 1)
    except RenkeiError as refusal:
        raise click.BadParameter(refusal.message_en) from None
    fault = {
        "kind": kind,
        "source": _party_code(config, source),
        "destination": _party_code(config, destination),
        "operation": operation,
        "probability": probability,
        **seconds,
        "limit": limit,
        "offset": skew,
    }
    added = _control(config, "POST", "/faults", fault)
    click.echo(f"{added['name']}: {_describe_fault(config, added)}")


def _describe_fault(config: Config, fault: dict[str, Any]) -> str:
    link = f"{_party_name(config, fault['source'])} → {_party_name(config, fault['destination'])}"
    what = fault["kind"]
    if fault["kind"] == "skew":
        return f"skew {fault['offset']:+g} s of the clock of {_party_name(config, fault['source'])}"
    if fault["latency"]:
        what += f" {fault['latency'] * 1000:g} ms"
    if fault["jitter"]:
        what += f" ± {fault['jitter'] * 1000:g} ms"
    operation = fault["operation"] or "every message"
    limit = f", at most {fault['limit']} messages" if fault["limit"] is not None else ""
    return f"{what} on {link}, {operation}, probability {fault['probability']:g}{limit}"


@faults_group.command("list")
@config_option
def faults_list(config_path: str) -> None:
    """The faults in force, with how many messages each has hit."""
    config = _config(config_path)
    listed = _control(config, "GET", "/faults")
    if not listed["faults"]:
        click.echo("no fault in force")
    for fault in listed["faults"]:
        click.echo(f"{fault['name']}: {_describe_fault(config, fault)}; hit {fault['hits']}")
    for name in listed["unreachable"]:
        click.echo(f"({name} not reached: its hits are not counted)")


@faults_group.command("clear")
@click.argument("names", nargs=-1)
@config_option
def faults_clear(names: tuple[str, ...], config_path: str) -> None:
    """Remove the faults NAMES (every fault when none is named)."""
    config = _config(config_path)
    if not names:
        _control(config, "DELETE", "/faults")
        click.echo("every fault removed")
    for name in names:
        _control(config, "DELETE", f"/faults/{name}")
        click.echo(f"{name} removed")


@faults_group.command("hits")
@config_option
def faults_hits(config_path: str) -> None:
    """The messages the faults hit lately: when, which fault, which link, which message."""
    config = _config(config_path)
    for hit in _control(config, "GET", "/hits")["hits"]:
        click.echo(
            f"{_jst(hit['at'])} {hit['fault']} {hit['kind']}: {hit['operation']} "
            f"{hit['message_id'] or '-'} {_party_name(config, hit['source'])} → "
            f"{_party_name(config, hit['destination'])}"
        )


@main.group("party")
def party_group() -> None:
    """Stop, start or kill one party's process of the running network (docs/control.md)."""


def _party_line(party: dict[str, Any]) -> str:
    pid = f"pid {party['pid']}" if party["pid"] is not None else "no process"
    ready = (
        f"ready since {_jst(party['ready_since'])}"
        if party["ready"]
        else ("not ready yet" if party["state"] == "running" else "")
    )
    return f"{party['name']:<12} {party['state']:<10} {pid:<10} {ready}".rstrip()


@party_group.command("list")
@config_option
def party_list(config_path: str) -> None:
    """Every party's process: running, stopped (through `renkei party stop`) or restarting
    (after a death), its pid, and since when it is ready (Japan time)."""
    config = _config(config_path)
    for party in _control(config, "GET", "/parties")["parties"]:
        click.echo(_party_line(party))


@party_group.command("stop")
@click.argument("name")
@config_option
def party_stop(name: str, config_path: str) -> None:
    """Stop the process of NAME (hub, meguro, meguro.2, ...) as a shutdown (SIGTERM): the
    supervisor does not start it again until `renkei party start NAME`."""
    config = _config(config_path)
    _control(config, "POST", f"/parties/{name}/stop", {})
    click.echo(f"{name} stopped; it stays stopped until `renkei party start {name}`")


def _ready_or_fail(party: dict[str, Any]) -> None:
    from renkei.supervisor import READY_WAIT

    if not party["ready"]:
        raise click.ClickException(
            f"{party['name']} is not ready after {READY_WAIT:g} s: see {party['log']}"
        )


def _wait_option(what: str) -> Any:
    return click.option("--wait", is_flag=True, help=f"Return once the party is ready{what}.")


@party_group.command("start")
@click.argument("name")
@config_option
@_wait_option("")
def party_start(name: str, config_path: str, wait: bool) -> None:
    """Start the process of NAME again (stopped through `renkei party stop`, or waiting to be
    started again after a death)."""
    from renkei.supervisor import READY_WAIT

    config = _config(config_path)
    body = {"wait": wait}
    party = _control(config, "POST", f"/parties/{name}/start", body, timeout=READY_WAIT + 30)
    click.echo(_party_line(party))
    if wait:
        _ready_or_fail(party)


@party_group.command("kill")
@click.argument("name")
@config_option
@_wait_option(" again")
def party_kill(name: str, config_path: str, wait: bool) -> None:
    """Kill the process of NAME as a crash (SIGKILL): the supervisor starts it again, as after
    any death."""
    from renkei.supervisor import READY_WAIT

    config = _config(config_path)
    body = {"wait": wait}
    party = _control(config, "POST", f"/parties/{name}/kill", body, timeout=READY_WAIT + 30)
    if not wait:
        click.echo(f"{name} killed; the supervisor starts it again")
        return
    click.echo(f"{name} killed and started again: {_party_line(party)}")
    _ready_or_fail(party)


# -- scenarios (docs/scenarios.md) --------------------------------------------------------------

LIBRARY = Path(__file__).resolve().parent.parent / "scenarios"
RUNS = Path(__file__).resolve().parent.parent / "var" / "scenario-runs"  # every run, kept
# Scenarios run at once by default: a scenario's network mostly waits (for deliveries, for
# timers), so four share two cores well.
DEFAULT_JOBS = 4


@main.group("scenario")
def scenario_group() -> None:
    """Interoperability scenarios: validate, list and run them (docs/scenarios.md)."""


def _scenarios(paths: tuple[Path, ...], tags: tuple[str, ...]) -> list[Any]:
    from renkei.scenarios.loading import ScenarioInvalid, load_scenarios

    try:
        scenarios = load_scenarios(paths or (LIBRARY,))
    except ScenarioInvalid as invalid:
        raise click.ClickException(str(invalid)) from None
    if tags:
        scenarios = [s for s in scenarios if set(tags) & set(s.tags)]
    return scenarios


paths_argument = click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
tag_option = click.option("--tag", "tags", multiple=True, help="Only scenarios with this tag.")


@scenario_group.command("validate")
@paths_argument
def scenario_validate(paths: tuple[Path, ...]) -> None:
    """Check scenario files (default: the library, scenarios/) against the schema without
    running them; the first problem is shown with its file and line."""
    scenarios = _scenarios(paths, ())
    click.echo(f"{len(scenarios)} scenarios valid")


@scenario_group.command("list")
@paths_argument
@tag_option
def scenario_list(paths: tuple[Path, ...], tags: tuple[str, ...]) -> None:
    """The scenarios of the library (or of PATHS): name, tags and purpose."""
    for scenario in _scenarios(paths, tags):
        click.echo(f"{scenario.name}  [{', '.join(scenario.tags)}]\n    {scenario.purpose}")


@scenario_group.command("run")
@paths_argument
@tag_option
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write JUnit XML here (a test case per scenario, its steps, why it failed).",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the HTML report (index.html: steps, sequence diagrams, messages) here.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the scenarios' networks keep their PKI, databases and (networks of processes) "
    "logs (default: a temporary one, removed after).",
)
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the run is kept, for `renkei scenario report` (default: var/scenario-runs).",
)
@click.option(
    "-c",
    "--config",
    "running_config",
    default=None,
    help="Run against the network in a box that runs with this configuration (make run), "
    "not in networks of their own: its clock, faults, capture and parties through its control "
    "API, put back as found after each scenario; scenarios that need more are skipped, saying "
    "why.",
)
@click.option(
    "--processes",
    is_flag=True,
    help="Run each scenario in a network of processes of its own (every party in a process, "
    "supervised, as make run), not in memory; its logs stay in its work directory.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 16),
    default=DEFAULT_JOBS,
    show_default=True,
    help="How many scenarios run at once, each in its network of its own (one at a time "
    "against a running network -c, and with a SUT you start yourself).",
)
@click.option(
    "--sut",
    "suts",
    multiple=True,
    metavar="ACTOR[=COMMAND]",
    help="The system under test ACTOR (an actor with role: sut): COMMAND is run when each "
    "scenario with it starts, told what it needs in RENKEI_* environment variables, and "
    "stopped at its end; without =COMMAND, you start it: what it needs is printed and the "
    "steps wait for it. A scenario whose SUT is not bound is skipped, saying which --sut it "
    "needs (docs/scenarios.md).",
)
def scenario_run(
    paths: tuple[Path, ...],
    tags: tuple[str, ...],
    junit_path: Path | None,
    report_dir: Path | None,
    work_dir: Path | None,
    runs_dir: Path | None,
    running_config: str | None,
    suts: tuple[str, ...],
    processes: bool,
    jobs: int,
) -> None:
    """Run scenarios (default: the whole library), each in a network in a box of its own
    (in memory, or over loopback mutual TLS; with --processes, or when it says given:
    {network: processes}, every party in a process of its own), or against a running one
    (-c); exit 0 only if none failed."""
    import shutil
    import tempfile

    from renkei.scenarios.reports import summary_line, write_html, write_junit
    from renkei.scenarios.runner import ScenarioRunner
    from renkei.scenarios.sut import parse_binding

    try:
        bindings = {binding.actor: binding for binding in map(parse_binding, suts)}
    except ValueError as failure:
        raise click.ClickException(str(failure)) from None
    if processes and running_config is not None:
        raise click.UsageError("--processes runs networks of their own; -c runs against one")
    scenarios = _scenarios(paths, tags)
    directory = work_dir or Path(tempfile.mkdtemp(prefix="renkei-scenarios-"))
    outcomes: list[Any] = []

    running = _config(running_config) if running_config is not None else None
    from datetime import UTC, datetime

    from renkei.scenarios.runs import record_outcome

    kept = (runs_dir or RUNS) / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    done: list[Any] = []

    def ended(outcome: Any) -> None:
        record_outcome(kept, outcome)
        done.append(outcome)
        line, _, more = summary_line(outcome).partition("\n")
        # Where the run stands, as each scenario ends (several run at once).
        click.echo(f"{line}  [{len(done)}/{len(scenarios)}]" + (f"\n{more}" if more else ""))

    async def work(reactor: Any) -> None:
        runner = ScenarioRunner(
            reactor, directory, running, bindings, click.echo, processes=processes
        )
        outcomes.extend(await runner.run_all(scenarios, ended, jobs))

    try:
        _react(work)
    finally:
        if work_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    click.echo(f"run kept in {kept} (renkei scenario report {kept} --report DIR)")
    if junit_path is not None:
        write_junit(junit_path, outcomes)
    if report_dir is not None:
        click.echo(f"report: {write_html(report_dir, outcomes, datetime.now(UTC))}")
    failed = [outcome for outcome in outcomes if not outcome.passed]
    skipped = sum(1 for outcome in outcomes if outcome.skipped is not None)
    ran = len(outcomes) - skipped
    click.echo(
        f"{ran - len(failed)} of {ran} scenarios passed"
        + (f" ({skipped} skipped, each saying why)" if skipped else "")
    )
    if failed:
        sys.exit(1)


@scenario_group.command("report")
@click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Write the HTML report (index.html) here.",
)
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write JUnit XML here too.",
)
def scenario_report(run: Path, report_dir: Path, junit_path: Path | None) -> None:
    """Make the reports of a run kept earlier (var/scenario-runs/RUN) again: its HTML report
    (and JUnit XML) from the steps, verdicts and messages it recorded."""
    from datetime import UTC, datetime

    from renkei.scenarios.reports import write_html, write_junit
    from renkei.scenarios.runs import read_run

    try:
        outcomes = read_run(run)
    except (OSError, ValueError, KeyError) as failure:
        raise click.ClickException(f"{run} holds no run that can be read: {failure}") from None
    click.echo(f"report: {write_html(report_dir, outcomes, datetime.now(UTC))}")
    if junit_path is not None:
        write_junit(junit_path, outcomes)
    failed = sum(1 for outcome in outcomes if not outcome.passed)
    click.echo(f"{len(outcomes)} scenarios, {failed} failed")
