"""An outside member joins the network: examples/outside_member/member.py, written from
docs/protocol.md and the XSDs only, runs as a process of its own for 練馬区 (Nerima) and
works with the box's hub, Meguro and Setagaya over mutual TLS on loopback, both ways."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from sqlalchemy import create_engine, select
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from crypto.pki import InstitutionEntry, PkiLayout, init_pki, load_certificate
from middleware.config import Config, load_config
from middleware.tables import hub_outbox
from tests.network import (
    CARE_INSURANCE,
    HANAKO_MEGURO,
    ICHIRO_MEGURO,
    LOCAL_TAX,
    MEGURO,
    PREMIUM_ASSESSMENT,
    REPOSITORY,
    SETAGAYA,
    TAX_INFORMATION,
    free_port,
    write_config,
)

NERIMA = "1131202000000000"
MEMBER = REPOSITORY / "examples" / "outside_member" / "member.py"
PERSONS = REPOSITORY / "examples" / "outside_member" / "persons.json"
TARO_MEGURO = "000000000010002"  # 世田谷 太郎 at Meguro: NER-0002 at the outside member
INCOME_LEVY = "TK00000201010004"  # 市町村民税所得割額


def nerima_config(directory: Path) -> tuple[Config, int]:
    """The box's test configuration with 練馬区 added; the port of the member's listener."""
    pki = directory / "pki"
    config = write_config(directory, pki)
    listen = free_port()
    with config.path.open("a", encoding="utf-8") as text:
        text.write(
            f"""
[institution:nerima]
code = {NERIMA}
name = 練馬区
kind = municipality
database = sqlite:///{directory / "nerima.sqlite"}
network_listen = tcp:port={free_port()}:interface=127.0.0.1
network_address = https://127.0.0.1:{listen}
back_office_listen = tcp:port={free_port()}:interface=127.0.0.1
back_office_address = https://127.0.0.1:{free_port()}
back_office_systems =
provides = {TAX_INFORMATION}
"""
        )
    init_pki(
        pki,
        [
            InstitutionEntry(MEGURO, (CARE_INSURANCE,)),
            InstitutionEntry(SETAGAYA, (LOCAL_TAX, CARE_INSURANCE)),
            InstitutionEntry(NERIMA),
        ],
    )
    return load_config(config.path), listen


def enrol(config: Config, folder: Path) -> None:
    """The member's folder, as `renkei pki enrol` writes it."""
    layout = PkiLayout(config.pki)
    folder.mkdir()
    shutil.copy(layout.ca().certificate, folder / "ca.pem")
    shutil.copy(layout.hub_signing().certificate, folder / "hub-signing.pem")
    own = layout.institution_directory(NERIMA)
    for name in ("tls", "signing", "encryption"):
        for suffix in ("pem", "key"):
            shutil.copy(own / f"{name}.{suffix}", folder / f"{name}.{suffix}")
    member = {
        "code": NERIMA,
        "name": "練馬区",
        "hub_address": config.hub_address,
        "hub_server_name": "hub.renkei.test",
        "server_name": f"i{NERIMA}.renkei.test",
    }
    (folder / "member.json").write_text(json.dumps(member, ensure_ascii=False), encoding="utf-8")


def member(folder: Path, *arguments: str) -> Any:
    """Run one member command (in a thread: the box answers it in this reactor)."""
    command = [sys.executable, str(MEMBER), "--folder", str(folder), *arguments]
    return deferToThread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )


class Network:
    """The running box, the member's folder and Meguro's care-insurance back office."""

    def __init__(self, box: Any, folder: Path, meguro: Any) -> None:
        self.box = box
        self.folder = folder
        self.meguro = meguro

    async def meguro_asks(self, person: str, provider: str, **extra: Any) -> dict[str, Any]:
        """Meguro's back office queries local-tax information; the ended query."""
        submitted = await self.meguro.submit_query(
            integrated_address_number=person,
            procedure=PREMIUM_ASSESSMENT,
            information_name=TAX_INFORMATION,
            provider=provider,
            **extra,
        )
        ended: dict[str, Any] = await self.meguro.wait_for_result(submitted["query_id"], 20)
        return ended


@pytest_twisted.async_yield_fixture(scope="module")
async def network(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Network]:
    """The box (hub, Meguro, Setagaya; no node for Nerima), the member serving on its port,
    its persons' 符号 acquired."""
    from twisted.internet import reactor

    from renkei.service import Box
    from simulators.back_office import BackOfficeClient

    directory = tmp_path_factory.mktemp("outside-member")
    config, port = nerima_config(directory)
    folder = directory / "member"
    enrol(config, folder)
    box = Box(config, reactor)
    for parts in (box.parties, box.nodes, box.back_offices):
        parts.pop("nerima", None)  # not ours: the outside member answers at its address
    await box.start()
    log = (directory / "member.log").open("w", encoding="utf-8")
    serving = subprocess.Popen(
        [sys.executable, str(MEMBER), "--folder", str(folder), "serve", "--listen", str(port)]
        + ["--data", str(PERSONS)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    meguro = BackOfficeClient(reactor, config, config.institution("meguro"), CARE_INSURANCE)
    try:
        for _ in range(100):
            if "listening on" in (directory / "member.log").read_text(encoding="utf-8"):
                break
            assert serving.poll() is None, (directory / "member.log").read_text()
            await deferLater(reactor, 0.1, lambda: None)
        acquired = await member(folder, "acquire", "--data", str(PERSONS))
        assert acquired.returncode == 0, acquired.stdout + acquired.stderr
        yield Network(box, folder, meguro)
    finally:
        await meguro.close()
        serving.terminate()
        serving.wait(timeout=10)
        log.close()
        await box.stopService()


@pytest_twisted.ensureDeferred
async def test_the_outside_member_provides_what_meguro_asks(network: Network) -> None:
    """As a provider: Meguro's query to Nerima (by its code) reaches the outside member with a
    permit; it answers from its data file, signed and encrypted for Meguro, and Meguro's
    query ends provided with its values: with a fiscal-year condition, only that year's."""
    ended = await network.meguro_asks(TARO_MEGURO, NERIMA)
    assert ended["state"] == "provided", ended
    records = {r["record_id"]: r for r in ended["result"]["records"]}
    assert set(records) == {"NER-TAX-2025-0002", "NER-TAX-2026-0002"}
    items = {i["code"]: i for i in records["NER-TAX-2026-0002"]["items"]}
    assert items[INCOME_LEVY]["value"] == "51700"
    assert items[INCOME_LEVY]["name"] == "市町村民税所得割額"
    assert ended["result"]["provider"] == NERIMA

    ended = await network.meguro_asks(TARO_MEGURO, NERIMA, conditions={"fiscal_year": 2025})
    assert ended["state"] == "provided", ended
    assert [r["record_id"] for r in ended["result"]["records"]] == ["NER-TAX-2025-0002"]

    ended = await network.meguro_asks(ICHIRO_MEGURO, NERIMA)  # not a person of Nerima's
    assert (ended["state"], ended["error"]["code"]) == ("refused", "FugoUnknown"), ended


@pytest_twisted.ensureDeferred
async def test_the_outside_member_queries_setagaya(network: Network) -> None:
    """As a requester: the outside member queries Setagaya for 目黒 花子's local-tax
    information through the hub, receives the provision on its listener, decrypts and
    verifies it and prints the items."""
    asked = await member(
        network.folder,
        *("query", "--person", "NER-0001", "--provider", SETAGAYA),
        *("--information-name", TAX_INFORMATION, "--procedure", PREMIUM_ASSESSMENT, "--json"),
    )
    assert asked.returncode == 0, asked.stdout + asked.stderr
    result = json.loads(asked.stdout)
    assert result["state"] == "provided"
    assert result["provider"] == SETAGAYA
    (record,) = result["records"]
    assert record["record_id"] == "SET-TAX-2026-0001"
    assert record["items"][INCOME_LEVY] == "84200"


@pytest_twisted.ensureDeferred
async def test_a_provision_for_someone_else_cannot_be_read_by_the_member_or_the_hub(
    network: Network,
) -> None:
    """Setagaya's provision for Meguro, as the hub relayed it, and the member's own
    provision for Meguro: the member cannot open either (PayloadUnreadable), the hub holds no
    key that could; Meguro's key opens them."""
    ended = await network.meguro_asks(HANAKO_MEGURO, SETAGAYA)
    assert ended["state"] == "provided", ended
    config = network.box.config
    assert config.network is not None
    engine = create_engine(config.network.database)
    with engine.connect() as connection:  # what the hub relayed to Meguro, as it holds it
        relayed = connection.execute(
            select(hub_outbox.c.body).where(
                hub_outbox.c.kind == "provision",
                hub_outbox.c.reference == ended["transaction_number"],
            )
        ).scalar_one()
    engine.dispose()
    setagaya_for_meguro = network.folder.parent / "setagaya-for-meguro.xml"
    setagaya_for_meguro.write_bytes(relayed)
    ours_for_meguro = sorted((network.folder / "sent").glob("*.xml"))
    assert ours_for_meguro, "the member sent Meguro its provisions"
    layout = PkiLayout(config.pki)
    meguro_key = serialization.load_pem_private_key(
        layout.institution_encryption(MEGURO).key.read_bytes(), None
    )
    meguro_certificate = load_certificate(layout.institution_encryption(MEGURO).certificate)
    for document in (setagaya_for_meguro, ours_for_meguro[0]):
        opened = await member(network.folder, "open", str(document))
        assert opened.returncode == 1, opened.stdout
        assert "PayloadUnreadable" in opened.stderr, opened.stderr
        envelope = _envelope(document.read_bytes())
        for key in (layout.hub_tls().key, layout.hub_signing().key):  # the hub's every key
            hub_key = serialization.load_pem_private_key(key.read_bytes(), None)
            assert not isinstance(hub_key, rsa.RSAPrivateKey)
        assert b"<ProvisionPayload" in pkcs7.pkcs7_decrypt_der(
            envelope, meguro_certificate, meguro_key, []
        )
    assert not list((Path(config.pki) / "hub").glob("encryption*"))


def _envelope(provision: bytes) -> bytes:
    import base64

    from lxml import etree

    root = etree.fromstring(provision)
    text = root.findtext("{urn:renkei:linkage:1}EncryptedPayload") or ""
    return base64.b64decode("".join(text.split()))
