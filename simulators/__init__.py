"""The simulated world around the intermediate servers: the network, back offices, people.

The fifth layer (codes → crypto → middleware → adapters → simulators → renkei): the hub and
住基ネット, マイナポータル, the in-memory network, faults on the links, a back-office client, a
staff member's browser on the console, the population and the use cases; it may import every
layer below, never ``renkei``.
"""

__all__ = [
    "back_office",
    "capture",
    "console_browser",
    "faults",
    "in_memory",
    "network",
    "population",
    "portal",
    "seeding",
    "use_cases",
]
