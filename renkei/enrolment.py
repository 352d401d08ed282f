"""An outside member's enrolment: its certificates from the network CA and what it is handed
with them (docs/protocol.md §1, "Outside members").

`enrol` does what ``renkei pki enrol NAME --out DIR [--csr-dir CSR]`` does, for the command
and for the scenario runner (an outside member that is the system under test of a
scenario): the member's TLS, signing and encryption certificates (for keys made here, or
for its own requests), the network CA, the hub's signing certificate to pin, and
``member.json``, what it must know of the network (its code, name, kind and address, its own
TLS server name, the hub's address and server name).
"""

from __future__ import annotations

from pathlib import Path

from crypto.pki import enrol_member, server_name_of_hub, server_name_of_institution
from middleware.config import Config, ConfigError, OutsideMember, UnknownMember

__all__ = ["enrol", "outside_member"]


def outside_member(config: Config, name: str) -> OutsideMember:
    """The outside member (``external = true``) of ``config`` by its name or code;
    UnknownMember naming the outside members there are when no institution has that name,
    ConfigError when it is one whose node is ours."""
    member = next((m for m in config.outside_members if name in (m.name, m.code)), None)
    if member is None:
        outside = ", ".join(m.name for m in config.outside_members) or "none configured"
        message = f"{name} is not an outside member (external = true) of {config.path}: {outside}"
        if any(name in (m.name, m.code) for m in config.members):
            raise ConfigError(message)
        raise UnknownMember(
            message,
            name,
            tuple(m.name for m in config.outside_members),
            f"the outside members (external = true) of {config.path}",
        )
    return member


def enrol(config: Config, member: OutsideMember, out: Path, csr_dir: Path | None) -> list[Path]:
    """Issue ``member``'s certificates in ``config``'s PKI and hand them over in ``out``
    with ``member.json``; the files written, in order (OSError, ValueError when it cannot)."""
    about = {
        "code": member.code,
        "name": member.display_name,
        "kind": member.kind,
        "network_address": member.network_address,
        "server_name": server_name_of_institution(member.code),
        "hub_address": config.hub_address,
        "hub_server_name": server_name_of_hub(),
    }
    return enrol_member(config.pki, member.code, out, about, csr_dir)
