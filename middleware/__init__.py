"""The intermediate server and what every party shares: messages, records, outbox, storage.

The third layer (codes → crypto → middleware → adapters → simulators → renkei): it may
import ``codes`` and ``crypto``, never HTTP or a back office's formats. Adapters reach a
node's database through ``store`` (``node.store``), never through ``tables``.
"""

__all__ = [
    "audit",
    "bulk_queries",
    "business_statistics",
    "chain",
    "clock",
    "conditions",
    "config",
    "deferred",
    "hardened_xml",
    "held",
    "held_queue",
    "list_sync",
    "messages",
    "migration_env",
    "network",
    "node",
    "outbox",
    "party",
    "permit",
    "permitted_list",
    "persons",
    "process_memory",
    "provider",
    "queries",
    "record_search",
    "records",
    "replica",
    "requester",
    "retention",
    "staff",
    "statistics",
    "storage",
    "store",
    "tables",
]
