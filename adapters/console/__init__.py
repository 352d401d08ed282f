"""The operator console (Klein + Jinja2, served over TLS): see ``adapters.console.app``."""

from adapters.console.app import Console, ConsoleService

__all__ = ["Console", "ConsoleService"]
