"""The network's own parties, simulated: the hub, its 符号 cipher and 住基ネット.

Part of the ``simulators`` layer (codes → crypto → middleware → adapters → simulators →
renkei).
"""

__all__ = ["fugo", "health", "hub", "jukinet"]
