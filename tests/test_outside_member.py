"""An outside member joins the network: examples/outside_member/member.py, written from
docs/protocol.md and the XSDs only, runs as a process of its own for 練馬区 (Nerima) and
works with the box's hub, Meguro and Setagaya over mutual TLS on loopback, both ways."""

from __future__ import annotations

import ast
import base64
import json
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
from lxml import etree
from sqlalchemy import create_engine, select
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from crypto.pki import PkiLayout, load_certificate
from middleware.config import Config, load_config
from middleware.tables import hub_outbox
from tests.conftest import running_box
from tests.network import (
    CARE_INSURANCE,
    HANAKO_MEGURO,
    ICHIRO_MEGURO,
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
NS = "urn:renkei:linkage:1"
INCOME_LEVY = "TK00000201010004"  # 市町村民税所得割額


def imported_packages(path: Path) -> set[str]:
    """The top-level packages the Python file at ``path`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }


def test_the_member_imports_nothing_of_the_project() -> None:
    """member.py uses the standard library and well-known libraries only: what it knows of
    the network comes from docs/protocol.md and the XSDs."""
    imported = imported_packages(MEMBER)
    assert imported <= set(sys.stdlib_module_names) | {"cryptography", "lxml", "signxml"}, imported


def nerima_config(directory: Path) -> tuple[Config, int]:
    """The box's test configuration with 練馬区 as an outside member (external = true); the
    port of the member's listener."""
    config = write_config(directory, directory / "pki")
    listen = free_port()
    with config.path.open("a", encoding="utf-8") as text:
        text.write(
            f"""
[institution:nerima]
code = {NERIMA}
name = 練馬区
kind = municipality
external = true
network_address = https://127.0.0.1:{listen}
provides = {TAX_INFORMATION}
"""
        )
    return load_config(config.path), listen


def renkei(*arguments: str) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "renkei"), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def enrol(config: Config, folder: Path) -> None:
    """The network's PKI, then the member's own keys and requests, and its enrolment: the
    folder gets its certificates, the network CA, the hub's signing certificate and
    member.json, and its keys never leave it."""
    renkei("pki", "init", str(config.pki), "-c", str(config.path))
    made = subprocess.run(
        [sys.executable, str(MEMBER), "--folder", str(folder), "keys"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    renkei(
        *("pki", "enrol", "nerima", "-c", str(config.path)),
        *("--out", str(folder), "--csr-dir", str(folder / "csr")),
    )
    assert not PkiLayout(config.pki).institution_tls(NERIMA).key.exists()


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

    from simulators.back_office import BackOfficeClient

    directory = tmp_path_factory.mktemp("outside-member")
    config, port = nerima_config(directory)
    folder = directory / "member"
    enrol(config, folder)
    box = await running_box(config, in_memory=False)
    log = (directory / "member.log").open("w", encoding="utf-8")
    serving = subprocess.Popen(
        [
            *(sys.executable, str(MEMBER), "--folder", str(folder)),
            *("serve", "--listen", str(port), "--data", str(PERSONS)),
        ],
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
    provision for Meguro: the member cannot open either (PayloadUnreadable) and the hub holds
    no key that could; Meguro's key opens both."""
    config = network.box.config
    assert config.network is not None
    from_setagaya = await network.meguro_asks(HANAKO_MEGURO, SETAGAYA)
    from_nerima = await network.meguro_asks(TARO_MEGURO, NERIMA)
    assert from_setagaya["state"] == from_nerima["state"] == "provided"
    engine = create_engine(config.network.database)
    with engine.connect() as connection:  # what the hub relayed to Meguro, as it holds it
        relayed = connection.execute(
            select(hub_outbox.c.body).where(
                hub_outbox.c.kind == "provision",
                hub_outbox.c.reference == from_setagaya["transaction_number"],
            )
        ).scalar_one()
    engine.dispose()
    setagaya_for_meguro = network.folder.parent / "setagaya-for-meguro.xml"
    setagaya_for_meguro.write_bytes(relayed)
    ours_for_meguro = network.folder / "sent" / f"{from_nerima['transaction_number']}.xml"
    layout = PkiLayout(config.pki)
    meguro = layout.institution_encryption(MEGURO)
    meguro_key = serialization.load_pem_private_key(meguro.key.read_bytes(), None)
    assert isinstance(meguro_key, rsa.RSAPrivateKey)
    for document in (setagaya_for_meguro, ours_for_meguro):
        opened = await member(network.folder, "open", str(document))
        assert opened.returncode == 1, opened.stdout
        assert "PayloadUnreadable" in opened.stderr, opened.stderr
        plaintext = pkcs7.pkcs7_decrypt_der(
            _envelope(document.read_bytes()), load_certificate(meguro.certificate), meguro_key, []
        )
        assert b"<ProvisionPayload" in plaintext
    for key in (layout.hub_tls().key, layout.hub_signing().key):  # every key the hub has
        assert not isinstance(
            serialization.load_pem_private_key(key.read_bytes(), None), rsa.RSAPrivateKey
        )


def _envelope(provision: bytes) -> bytes:
    """The CMS envelope (DER) of a Provision document."""
    text = etree.fromstring(provision).findtext(f"{{{NS}}}EncryptedPayload") or ""
    return base64.b64decode("".join(text.split()))
