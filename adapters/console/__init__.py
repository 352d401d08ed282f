"""The operator console (Klein + Jinja2, served over TLS): see ``adapters.console.app``.

Part of the ``adapters`` layer. ``i18n`` (the console's words) is its own.
"""

from adapters.console.app import Console, console_listener

__all__ = ["Console", "app", "console_listener"]
