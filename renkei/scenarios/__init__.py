"""Interoperability scenarios: files that write down a conversation between the actors of
the network, checked against a JSON Schema, run against a network in a box with a verdict
per step, and reported (docs/scenarios.md).
"""

__all__ = [
    "back_office",
    "captured",
    "certificates",
    "conversation",
    "loading",
    "networks",
    "outcomes",
    "processes",
    "reports",
    "runner",
    "runs",
    "staff",
    "sut",
    "targets",
    "templating",
    "validators",
]
