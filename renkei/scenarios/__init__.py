"""Interoperability scenarios: files that write down a conversation between the actors of
the network, checked against a JSON Schema, run against a network in a box with a verdict
per step, and reported (docs/scenarios.md).
"""

__all__ = [
    "captured",
    "conversation",
    "loading",
    "outcomes",
    "processes",
    "reports",
    "runner",
    "runs",
    "targets",
    "validators",
]
