"""The ``renkei`` command: PKI set-up, the demo query and record checks."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from crypto.pki import InstitutionEntry, init_pki
from middleware.config import Config, ConfigError, load_config
from middleware.records import count_records, records_of_transaction, verify_chain
from middleware.storage import Database
from middleware.tables import hub_record_head, hub_records, node_record_head, node_records


def _config(path: str) -> Config:
    try:
        return load_config(Path(path))
    except ConfigError as failure:
        raise click.ClickException(str(failure)) from None


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default="twistd.conf",
    show_default=True,
    help="The configuration file describing the network.",
)


@click.group()
def main() -> None:
    """renkei: an emulation of the My Number information-linkage network."""


@main.group()
def pki() -> None:
    """The test network's PKI."""


@pki.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@config_option
def pki_init(directory: Path, config_path: str) -> None:
    """Create the network CA, the hub's keys and every configured institution's keys in
    DIRECTORY. Only what is missing is created; nothing is overwritten."""
    config = _config(config_path)
    init_pki(
        directory,
        [
            InstitutionEntry(code=i.code, back_office_systems=i.back_office_systems)
            for i in config.institutions
        ],
    )
    click.echo(f"PKI ready in {directory} for {len(config.institutions)} institutions")


@main.command()
@config_option
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the result.")
def demo(config_path: str, timeout: float) -> None:
    """Send the demo query of the network in a box (started by `make run`) and print the
    decrypted provision, its 処理通番 and the records each party wrote."""
    from twisted.internet.task import react

    config = _config(config_path)
    react(lambda reactor: _demo(reactor, config, timeout))


def _demo(reactor: Any, config: Config, timeout: float) -> Any:
    from twisted.internet.defer import ensureDeferred

    return ensureDeferred(_run_demo(reactor, config, timeout))


async def _run_demo(reactor: Any, config: Config, timeout: float) -> None:
    from simulators.back_office import BackOfficeClient, BackOfficeError

    if config.demo_data is None:
        raise click.ClickException("the configuration has no [demo] section")
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
    except BackOfficeError as refusal:
        raise click.ClickException(
            f"{refusal.code}: {refusal.error.get('message_en')} / {refusal.error.get('message_ja')}"
        ) from None
    except Exception as failure:
        raise click.ClickException(f"the network in a box did not answer: {failure}") from None
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


def _print_records(config: Config, number: str) -> None:
    from twisted.internet import reactor

    parties: list[tuple[str, str, Any]] = []
    if config.network is not None:
        parties.append(("hub", config.network.database, hub_records))
    parties += [(i.display_name, i.database, node_records) for i in config.institutions]
    click.echo("情報提供等記録 (provision records):")
    for name, url, table in parties:
        database = Database(reactor, url)
        try:
            rows = database.run_blocking(records_of_transaction, table, number)
        finally:
            database.stop()
        for row in rows:
            click.echo(
                f"  [{name}] #{row['seq']} {row['recorded_at']:%Y-%m-%d %H:%M:%S} "
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
    """Check every party's hash chain of provision records; exit 1 on a break."""
    from twisted.internet import reactor

    config = _config(config_path)
    parties: list[tuple[str, str, Any, Any]] = []
    if config.network is not None:
        parties.append(("hub", config.network.database, hub_records, hub_record_head))
    parties += [(i.name, i.database, node_records, node_record_head) for i in config.institutions]
    broken = False
    for name, url, table, head in parties:
        database = Database(reactor, url)
        try:
            first_bad = database.run_blocking(verify_chain, table, head)
            count = database.run_blocking(count_records, table)
        finally:
            database.stop()
        if first_bad is None:
            click.echo(f"{name}: {count} records, chain intact")
        else:
            broken = True
            click.echo(f"{name}: chain broken at record {first_bad}")
    if broken:
        sys.exit(1)


# -- staff and the audit log ------------------------------------------------------------------

institution_option = click.option(
    "-i",
    "--institution",
    "institution_name",
    required=True,
    help="The institution (section name, e.g. meguro, or code) whose database to use.",
)


def _node_database(config: Config, name: str) -> tuple[Any, Database]:
    """An institution and its database, migrated to the current schema."""
    from twisted.internet import reactor

    from middleware.node import MIGRATIONS
    from middleware.storage import migrate

    try:
        institution = config.institution(name)
    except ConfigError as failure:
        raise click.ClickException(str(failure)) from None
    migrate(institution.database, MIGRATIONS)
    return institution, Database(reactor, institution.database)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0)


def _coded(call: Any, *args: Any, **kwargs: Any) -> Any:
    from codes.errors import RenkeiError

    try:
        return call(*args, **kwargs)
    except RenkeiError as refusal:
        raise click.ClickException(
            f"{refusal.code}: {refusal.message_en} / {refusal.message_ja}"
        ) from None


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
    institution, database = _node_database(config, institution_name)
    try:
        exists = any(u["name"] == name for u in database.run_blocking(staff.list_users))
        if exists and if_absent:
            click.echo(f"staff user {name} already exists at {institution.name}")
            return
        password, show = _password(password_file, generate_password)
        secret = _coded(
            database.run_blocking,
            staff.add_user,
            _now(),
            name,
            display_name or name,
            password,
            roles,
            actor=audit.SYSTEM,
            with_totp=with_totp,
        )
    finally:
        database.stop()
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
    _, database = _node_database(config, institution_name)
    try:
        users = database.run_blocking(staff.list_users)
    finally:
        database.stop()
    for user in users:
        flags = []
        if user["totp_enabled"]:
            flags.append("totp")
        if user["disabled"]:
            flags.append("disabled")
        if user["locked_until"] is not None:
            flags.append(f"locked until {user['locked_until'].isoformat()}")
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
    _, database = _node_database(config, institution_name)
    try:
        _coded(database.run_blocking, staff.disable_user, _now(), name, actor=audit.SYSTEM)
    finally:
        database.stop()
    click.echo(f"staff user {name} disabled")


@staff_group.command("reset-password")
@click.argument("name")
@config_option
@institution_option
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--generate-password", is_flag=True, help="Generate a password and print it.")
def staff_reset_password(
    name: str,
    config_path: str,
    institution_name: str,
    password_file: Path | None,
    generate_password: bool,
) -> None:
    """Set a new password for NAME, clear its lockout and end its sessions."""
    from middleware import audit, staff

    config = _config(config_path)
    _, database = _node_database(config, institution_name)
    password, show = _password(password_file, generate_password)
    try:
        _coded(
            database.run_blocking, staff.reset_password, _now(), name, password, actor=audit.SYSTEM
        )
    finally:
        database.stop()
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
    """Check an institution's audit-log hash chain; exit 1 on a break."""
    from middleware import audit

    config = _config(config_path)
    institution, database = _node_database(config, institution_name)
    try:
        first_bad = database.run_blocking(audit.verify_audit)
        count = database.run_blocking(audit.count_audit)
    finally:
        database.stop()
    if first_bad is None:
        click.echo(f"{institution.name}: {count} audit entries, chain intact")
    else:
        click.echo(f"{institution.name}: audit chain broken at entry {first_bad}")
        sys.exit(1)
