"""The composition of renkei: the network in a box, the twistd service maker and the CLI.

The one package that wires parties, adapters and simulators together; it sits above every
other layer (docs/architecture.md) and nothing imports it.
"""

__all__ = [
    "cli",
    "control",
    "enrolment",
    "failures",
    "sandbox",
    "scenarios",
    "service",
    "supervisor",
]
