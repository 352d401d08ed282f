"""twistd plugin: ``twistd -n renkei -c twistd.conf`` runs a renkei network in a box."""

from twisted.application.service import ServiceMaker

renkei = ServiceMaker(
    "renkei",
    "renkei.service",
    "The My Number information-linkage network emulation: hub and intermediate servers.",
    "renkei",
)
