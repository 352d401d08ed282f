"""The operator console (Klein + Jinja2, served over TLS): see ``adapters.console.app``."""

from adapters.console.app import Console, console_listener

__all__ = ["Console", "console_listener"]
