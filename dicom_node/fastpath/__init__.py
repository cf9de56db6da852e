"""A lean DICOM upper-layer acceptor (PS3.8) for the node's hot path: C-STORE to a spool file."""

__all__ = ["association", "dimse", "pdu", "reader", "server", "spool"]
