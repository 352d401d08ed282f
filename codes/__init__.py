"""The codes of the network: check digits, institution and typed codes, the catalogue, the code
lists of coded items, errors.

The bottom layer (codes → crypto → middleware → adapters → simulators → renkei): values and
their validation, no SQL and no I/O beyond reading a catalogue file; it imports no other
package of renkei.
"""

__all__ = [
    "catalogue",
    "errors",
    "individual_number",
    "institution",
    "item_values",
    "municipality_code",
    "typed",
]
