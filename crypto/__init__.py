"""The cryptography of the network: the test PKI, mutual TLS, XML signatures, CMS envelopes.

The second layer (codes → crypto → middleware → adapters → simulators → renkei): it may
import ``codes`` only.
"""

__all__ = ["envelope", "pki", "tls", "xmlsig"]
