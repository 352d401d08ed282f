"""The care-insurance (介護保険) back office's adapter: the formats real back offices use.

Part of the ``adapters`` layer (codes → crypto → middleware → adapters → simulators →
renkei).

- ``replica_file``: 副本 registration and deletion files (XML), posted or dropped in a
  watched folder, validated entry by entry against the catalogue, with a result file.
- ``bulk_query``: bulk queries (一括照会) as the 18-field CSV, UTF-8 or Shift_JIS, with
  per-line states, progress and a result file.
"""

__all__ = ["bulk_query", "replica_file"]
