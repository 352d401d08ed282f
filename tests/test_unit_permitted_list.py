"""Unit tests for middleware.permitted_list: checking queries and keeping list versions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Connection, func, select
from twisted.internet.interfaces import IReactorThreads

from codes.errors import RenkeiError
from middleware.permitted_list import (
    Delegation,
    ListedInstitution,
    PermittedList,
    PermittedRule,
    directory,
    latest_version,
    read_delegations,
    read_rules,
    store_version,
)
from middleware.storage import Database, migrate
from middleware.tables import node_list_versions

ROOT = Path(__file__).resolve().parents[1]
RULES_CSV = ROOT / "simulators" / "network" / "data" / "permitted_list.csv"
NODE_MIGRATIONS = ROOT / "middleware" / "migrations"

MEGURO = "1131105000000000"
SETAGAYA = "1131121000000000"
PENSION = "2000000000000001"
AFFAIR = "JM90000000001000"
TAX_PROCEDURE = "JT90010000000001"
CARE_PROCEDURE = "JT90010000000002"
LOCAL_TAX = "TM00000000000002"
CARE_INSURANCE = "TM00000000000004"

ISSUED = datetime(2026, 1, 1, tzinfo=UTC)
EXPIRES = ISSUED + timedelta(days=1)
NOW = ISSUED + timedelta(hours=1)


@pytest.fixture(scope="module")
def rules() -> list[PermittedRule]:
    """The hub's rules as shipped with the repository."""
    return read_rules(RULES_CSV)


@pytest.fixture
def permitted(rules: list[PermittedRule]) -> PermittedList:
    """A current list with two municipalities and a pension office."""
    return PermittedList(
        version=7,
        issued_at=ISSUED,
        expires_at=EXPIRES,
        institutions=directory(
            [
                ListedInstitution(MEGURO, "目黒区", "municipality"),
                ListedInstitution(SETAGAYA, "世田谷区", "municipality"),
                ListedInstitution(PENSION, "年金事務所", "pension"),
            ]
        ),
        rules=tuple(rules),
    )


@pytest.fixture
def node_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated node database in a SQLite file, used through run_blocking only."""
    url = f"sqlite:///{tmp_path / 'node.sqlite'}"
    migrate(url, NODE_MIGRATIONS)
    database = Database(cast(IReactorThreads, object()), url)
    yield database
    database.stop()


def test_permitted_query_passes_and_returns_its_rule(permitted: PermittedList) -> None:
    """A query matching a row passes and the matching rule (with legal basis) is returned."""
    rule = permitted.check(MEGURO, SETAGAYA, AFFAIR, TAX_PROCEDURE, LOCAL_TAX, NOW)
    assert rule == PermittedRule(
        requester_kind="municipality",
        affair=AFFAIR,
        procedure=TAX_PROCEDURE,
        provider_kind="municipality",
        information_name=LOCAL_TAX,
        legal_basis=(
            "番号法第19条第8号 別表第二 123の項又は124の項"
            " (目黒区の評価書の照会根拠; 行との対応はエミュレーション)"
        ),
    )


def test_permission_depends_on_kinds_not_on_the_institutions(permitted: PermittedList) -> None:
    """Rules name institution kinds, so the reverse direction between two municipalities passes."""
    rule = permitted.check(SETAGAYA, MEGURO, AFFAIR, CARE_PROCEDURE, CARE_INSURANCE, NOW)
    assert rule.information_name == CARE_INSURANCE


@pytest.mark.parametrize(
    ("provider", "affair", "procedure", "information_name"),
    [
        (SETAGAYA, AFFAIR, CARE_PROCEDURE, LOCAL_TAX),
        (SETAGAYA, AFFAIR, TAX_PROCEDURE, CARE_INSURANCE),
        (PENSION, AFFAIR, TAX_PROCEDURE, LOCAL_TAX),
        (SETAGAYA, "JM90000000002000", TAX_PROCEDURE, LOCAL_TAX),
    ],
    ids=["other-procedure", "other-information-name", "other-provider-kind", "other-affair"],
)
def test_query_without_matching_row_is_not_permitted(
    permitted: PermittedList, provider: str, affair: str, procedure: str, information_name: str
) -> None:
    """Changing any one element of a permitted row gives NotPermitted."""
    with pytest.raises(RenkeiError) as caught:
        permitted.check(MEGURO, provider, affair, procedure, information_name, NOW)
    assert caught.value.code == "NotPermitted"
    assert caught.value.status == 403
    assert caught.value.message_ja == f"特定個人情報名{information_name}の照会は許可されていません"
    assert procedure in caught.value.message_en


def test_not_permitted_japanese_message_names_the_information_name(
    permitted: PermittedList,
) -> None:
    """The Japanese NotPermitted message reads 「特定個人情報名TM…の照会は許可されていません」."""
    with pytest.raises(RenkeiError) as caught:
        permitted.check(MEGURO, SETAGAYA, AFFAIR, CARE_PROCEDURE, LOCAL_TAX, NOW)
    assert caught.value.message_ja == "特定個人情報名TM00000000000002の照会は許可されていません"


@pytest.mark.parametrize(
    ("requester", "provider", "unknown"),
    [
        ("1999999000000000", SETAGAYA, "1999999000000000"),
        (MEGURO, "1999999000000000", "1999999000000000"),
    ],
    ids=["unknown-requester", "unknown-provider"],
)
def test_unknown_institution_is_refused(
    permitted: PermittedList, requester: str, provider: str, unknown: str
) -> None:
    """An institution missing from the list's directory gives UnknownInstitution."""
    with pytest.raises(RenkeiError) as caught:
        permitted.check(requester, provider, AFFAIR, TAX_PROCEDURE, LOCAL_TAX, NOW)
    assert caught.value.code == "UnknownInstitution"
    assert unknown in caught.value.message_en


@pytest.mark.parametrize(
    "now", [EXPIRES, EXPIRES + timedelta(seconds=1)], ids=["at-expiry", "after-expiry"]
)
def test_expired_list_refuses_every_check(permitted: PermittedList, now: datetime) -> None:
    """From its expiry instant on, the list refuses even a permitted query."""
    with pytest.raises(RenkeiError) as caught:
        permitted.check(MEGURO, SETAGAYA, AFFAIR, TAX_PROCEDURE, LOCAL_TAX, now)
    assert caught.value.code == "PermittedListExpired"
    assert "2026-01-02T00:00:00Z" in caught.value.message_en


def test_ensure_current_passes_before_expiry(permitted: PermittedList) -> None:
    """A list is current up to one second before its expiry."""
    permitted.ensure_current(EXPIRES - timedelta(seconds=1))


def test_read_rules_refuses_an_unknown_kind(tmp_path: Path) -> None:
    """A rules file naming a kind outside INSTITUTION_KINDS is refused on load."""
    path = tmp_path / "rules.csv"
    path.write_text(
        "requester_kind,affair,procedure,provider_kind,information_name,legal_basis\n"
        f"municipality,{AFFAIR},{TAX_PROCEDURE},welfare-office,{LOCAL_TAX},x\n",
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match="welfare-office"):
        read_rules(path)


def test_read_rules_reads_the_repository_csv(rules: list[PermittedRule]) -> None:
    """The shipped CSV gives its six rows with every column, and no comment line as a row."""
    assert [(r.procedure, r.provider_kind, r.information_name) for r in rules] == [
        (TAX_PROCEDURE, "municipality", LOCAL_TAX),
        (CARE_PROCEDURE, "municipality", CARE_INSURANCE),
        ("JT90010000000003", "municipality", CARE_INSURANCE),
        (TAX_PROCEDURE, "welfare_office", "TM00000000900001"),
        (TAX_PROCEDURE, "pension", "TM00000000900002"),
        (TAX_PROCEDURE, "municipality", "TM00000000900003"),
    ]
    for rule in rules:
        assert rule.requester_kind == "municipality"
        assert rule.affair == AFFAIR
        assert rule.legal_basis.startswith("番号法第19条第8号")


def test_read_rules_skips_comment_lines_anywhere(tmp_path: Path) -> None:
    """Lines starting with # are skipped before, between and after rows."""
    path = tmp_path / "rules.csv"
    path.write_text(
        "# a comment\n"
        "requester_kind,affair,procedure,provider_kind,information_name,legal_basis\n"
        "# between rows\n"
        f"municipality,{AFFAIR},{TAX_PROCEDURE},municipality,{LOCAL_TAX},basis A\n"
        "#,trailing,comment,that,looks,like a row\n"
        f"pension,{AFFAIR},{CARE_PROCEDURE},municipality,{CARE_INSURANCE},basis B\n",
        encoding="utf-8",
    )
    rules = read_rules(path)
    assert [(r.requester_kind, r.legal_basis) for r in rules] == [
        ("municipality", "basis A"),
        ("pension", "basis B"),
    ]


def test_latest_version_of_an_empty_table_is_none(node_db: Database) -> None:
    """Before any version is stored there is no latest version."""
    assert node_db.run_blocking(latest_version, node_list_versions) is None


def test_store_version_is_idempotent(node_db: Database) -> None:
    """Storing a version twice keeps the first document and reports the second as not new."""

    def _store(connection: Connection, version: int, document: bytes) -> bool:
        return store_version(
            connection, node_list_versions, version, ISSUED, EXPIRES, document, NOW
        )

    assert node_db.run_blocking(_store, 1, b"<first/>") is True
    assert node_db.run_blocking(_store, 1, b"<second/>") is False
    assert node_db.run_blocking(latest_version, node_list_versions) == (1, b"<first/>")

    def _count(connection: Connection) -> int:
        return int(
            connection.execute(select(func.count()).select_from(node_list_versions)).scalar_one()
        )

    assert node_db.run_blocking(_count) == 1


def test_latest_version_is_the_highest_number_not_the_last_stored(node_db: Database) -> None:
    """The newest version is chosen by number even when an older one is stored later."""
    for version in (1, 3, 2):
        node_db.run_blocking(
            store_version,
            node_list_versions,
            version,
            ISSUED,
            EXPIRES,
            f"<v{version}/>".encode(),
            NOW,
        )
    assert node_db.run_blocking(latest_version, node_list_versions) == (3, b"<v3/>")


def test_stored_version_keeps_its_times(node_db: Database) -> None:
    """Issue, expiry and storage times come back as the aware UTC datetimes stored."""
    node_db.run_blocking(store_version, node_list_versions, 5, ISSUED, EXPIRES, b"<doc/>", NOW)

    def _row(connection: Connection) -> tuple[datetime, datetime, datetime]:
        row = connection.execute(
            select(
                node_list_versions.c.issued_at,
                node_list_versions.c.expires_at,
                node_list_versions.c.stored_at,
            )
        ).one()
        return row.issued_at, row.expires_at, row.stored_at

    assert node_db.run_blocking(_row) == (ISSUED, EXPIRES, NOW)


# -- delegation (委任) -------------------------------------------------------------------


def delegated(permitted: PermittedList, *delegations: Delegation) -> PermittedList:
    """The same list with these delegations."""
    from dataclasses import replace

    return replace(permitted, delegations=frozenset(delegations))


def test_institution_acting_for_itself_needs_no_delegation(permitted: PermittedList) -> None:
    """A 委任元 equal to the institution itself, or none, is no delegation at all."""
    assert permitted.acting_for(SETAGAYA, None) == SETAGAYA
    assert permitted.acting_for(SETAGAYA, SETAGAYA) == SETAGAYA


def test_delegation_on_the_list_lets_the_delegate_query_for_the_delegator(
    permitted: PermittedList,
) -> None:
    """With Meguro → Setagaya listed, Setagaya may query in Meguro's name; the rule is
    checked for Meguro."""
    listed = delegated(permitted, Delegation(MEGURO, SETAGAYA))
    rule = listed.check(
        SETAGAYA, MEGURO, AFFAIR, CARE_PROCEDURE, CARE_INSURANCE, NOW, delegating_requester=MEGURO
    )
    assert rule.information_name == CARE_INSURANCE


def test_delegation_not_on_the_list_is_refused(permitted: PermittedList) -> None:
    """Without the delegation, or in the other direction, acting for another is
    DelegationNotPermitted, for the requester and for the provider alike."""
    listed = delegated(permitted, Delegation(MEGURO, SETAGAYA))
    with pytest.raises(RenkeiError) as requester:
        listed.check(
            MEGURO, SETAGAYA, AFFAIR, TAX_PROCEDURE, LOCAL_TAX, NOW, delegating_requester=SETAGAYA
        )
    assert requester.value.code == "DelegationNotPermitted"
    with pytest.raises(RenkeiError) as provider:
        permitted.check(
            MEGURO, SETAGAYA, AFFAIR, TAX_PROCEDURE, LOCAL_TAX, NOW, delegating_provider=MEGURO
        )
    assert provider.value.code == "DelegationNotPermitted"


def test_rule_is_checked_for_the_institution_acted_for(permitted: PermittedList) -> None:
    """A municipality answering in the name of the pension office is held to the pension
    office's rules: the municipality rule for local tax does not cover it."""
    listed = delegated(permitted, Delegation(PENSION, SETAGAYA))
    with pytest.raises(RenkeiError) as refused:
        listed.check(
            MEGURO, SETAGAYA, AFFAIR, TAX_PROCEDURE, LOCAL_TAX, NOW, delegating_provider=PENSION
        )
    assert refused.value.code == "NotPermitted"


def test_delegator_unknown_to_the_directory_is_refused(permitted: PermittedList) -> None:
    """A 委任元 that is not on the network is UnknownInstitution."""
    with pytest.raises(RenkeiError) as refused:
        permitted.check(
            SETAGAYA,
            MEGURO,
            AFFAIR,
            CARE_PROCEDURE,
            CARE_INSURANCE,
            NOW,
            delegating_requester="1999999000000000",
        )
    assert refused.value.code == "UnknownInstitution"


def test_delegations_file_is_read_and_checked(tmp_path: Path) -> None:
    """The shipped delegations file reads; a malformed code or a self-delegation is refused
    naming the file."""
    shipped = read_delegations(ROOT / "simulators" / "network" / "data" / "delegations.csv")
    assert all(isinstance(d, Delegation) for d in shipped) and shipped
    bad = tmp_path / "delegations.csv"
    bad.write_text("delegator,delegate,note\n123,1131121000000000,x\n", "utf-8")
    with pytest.raises(ValueError, match=r"delegations\.csv"):
        read_delegations(bad)
    bad.write_text(f"delegator,delegate,note\n{MEGURO},{MEGURO},x\n", "utf-8")
    with pytest.raises(ValueError, match="itself"):
        read_delegations(bad)
