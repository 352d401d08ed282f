"""The adapters of an intermediate server: the network link, the back-office API, the console.

The fourth layer (codes → crypto → middleware → adapters → simulators → renkei): HTTP and
the formats of the outside world, over ``middleware``; it may import the layers below only.
"""

__all__ = [
    "alerts",
    "back_office_api",
    "care_insurance",
    "console",
    "link_batch",
    "listening",
    "metrics",
    "network_link",
    "payload_view",
]
