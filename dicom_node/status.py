"""DIMSE status codes the node answers with, as data.

Each table cites its part of the standard. The ``0xCxxx`` and ``0xA9xx`` sub-codes are
ours: PS3.4 B.2.3 reserves the whole range for the SCP to pick, so each failure kind
gets its own code and a peer's log tells the kinds apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from countyread.errors import InvalidInputError

SUCCESS = 0x0000

# General status values - PS3.7 Annex C (C.4 failure, C.5 warning)
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_ATTRIBUTE_VALUE = 0x0106
MISSING_ATTRIBUTE = 0x0120
INVALID_OBJECT_INSTANCE = 0x0117
SOP_CLASS_NOT_SUPPORTED = 0x0122
INVALID_ARGUMENT_VALUE = 0x0115
NO_SUCH_ACTION_TYPE = 0x0123

# Storage Service Class specific status values - PS3.4 Annex B.2.3
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
MISSING_TYPE1_ATTRIBUTE = 0xA901
PIXEL_DATA_LENGTH_MISMATCH = 0xA902
INVALID_IMAGE_ATTRIBUTE = 0xA903
CANNOT_UNDERSTAND = 0xC000
UNREADABLE_DATASET = 0xC210
INVALID_UID = 0xC220
INCONSISTENT_STUDY = 0xC230
UNSUPPORTED_TRANSFER_SYNTAX = 0xC240

STORAGE_STATUS: dict[int, str] = {
    SUCCESS: "Success",
    PROCESSING_FAILURE: "Processing failure (PS3.7 C.4.1)",
    INVALID_OBJECT_INSTANCE: "Invalid SOP instance (PS3.7 C.4.5)",
    SOP_CLASS_NOT_SUPPORTED: "Refused: SOP class not supported (PS3.7 C.4.9)",
    OUT_OF_RESOURCES: "Refused: out of resources (PS3.4 B.2.3)",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: data set does not match SOP class (PS3.4 B.2.3)",
    MISSING_TYPE1_ATTRIBUTE: "Error: data set does not match SOP class - type 1 missing",
    PIXEL_DATA_LENGTH_MISMATCH: "Error: data set does not match SOP class - pixel length",
    INVALID_IMAGE_ATTRIBUTE: "Error: data set does not match SOP class - image attribute",
    CANNOT_UNDERSTAND: "Error: cannot understand (PS3.4 B.2.3)",
    UNREADABLE_DATASET: "Error: cannot understand - data set unreadable",
    INVALID_UID: "Error: cannot understand - invalid UID",
    INCONSISTENT_STUDY: "Error: cannot understand - series belongs to another study",
    UNSUPPORTED_TRANSFER_SYNTAX: "Error: cannot understand - transfer syntax not supported",
}

# Modality Performed Procedure Step SOP class statuses - PS3.4 F.7.2.1 / F.7.2.2
MPPS_STATUS: dict[int, str] = {
    SUCCESS: "Success",
    PROCESSING_FAILURE: "Processing failure (PS3.7 C.4.1); ErrorID 0xA710 when completed",
    DUPLICATE_SOP_INSTANCE: "Duplicate SOP instance (PS3.7 C.4.2)",
    NO_SUCH_OBJECT_INSTANCE: "No such SOP instance (PS3.7 C.4.4)",
    INVALID_ATTRIBUTE_VALUE: "Invalid attribute value (PS3.7 C.4.3)",
    MISSING_ATTRIBUTE: "Missing attribute (PS3.7 C.4.8)",
}

#: PS3.4 F.7.2.2: a COMPLETED or DISCONTINUED step "may no longer be updated".
MPPS_ERROR_ID_NOT_UPDATABLE = 0xA710


def is_failure(status: int) -> bool:
    """True for failure statuses (PS3.7 C: 0x01xx, 0x02xx, 0xA/0xC ranges)."""
    return status != SUCCESS and not (0xB000 <= status <= 0xBFFF) and status not in (
        0x0107, 0x0116,
    )


@dataclass(frozen=True, slots=True)
class DimseOutcome:
    """What the node answers for one request: a status and an optional ErrorComment."""

    status: int
    comment: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


class DimseFailure(InvalidInputError):
    """Bad input that maps to one DIMSE failure status.

    The message becomes the ErrorComment (0000,0902), which PS3.7 E.1 limits to 64
    characters; it names the problem and never carries PHI.
    """

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status = status
        self.comment = comment[:64]
