"""マイナポータル, simulated: a party of the network that acts for persons.

Part of the ``simulators`` layer. A person signs in (emulated: the portal holds demo
residents' individual numbers, `accounts`), and through the hub the portal asks an
institution for the person's own information, shows the person's provision records and
keeps the notices institutions send them (`portal`); `web` is its pages.
"""

__all__ = [
    "accounts",
    "disclosure",
    "notices",
    "person_browser",
    "portal",
    "self_information",
    "web",
]
