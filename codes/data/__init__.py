"""Packaged data of the codes package (catalogue.json, the data standard layout)."""

__all__: list[str] = []
