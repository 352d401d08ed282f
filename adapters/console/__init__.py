"""The operator console (Klein + Jinja2, served over TLS): see ``adapters.console.app``.

Part of the ``adapters`` layer: ``i18n`` holds the console's words, ``statistics`` the
業務統計 page's tables and CSV, ``chart`` its SVG chart and ``naming`` the names of
the codes a person reads.
"""

from adapters.console.app import Console, console_listener

__all__ = ["Console", "app", "chart", "console_listener", "i18n", "naming", "statistics"]
