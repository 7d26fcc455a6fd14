"""DIMSE status codes, one table for the box (PS3.4 Annex B and C.4, PS3.7 Annex C), and
how the box reads a status it gets back."""

from __future__ import annotations

SUCCESS = 0x0000
# Warnings: the operation was done, with a remark.
WARNING_COERCION = 0xB000  # C-STORE: coercion of data elements
WARNING_DATASET_MISMATCH = 0xB007  # C-STORE: data set does not match SOP class
WARNING_ELEMENTS_DISCARDED = 0xB006  # C-STORE: elements discarded
# Pending and cancel (C-FIND).
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # pending, some optional keys not supported
CANCEL = 0xFE00
# Failures.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_SOP_INSTANCE = 0x0112
INVALID_ARGUMENT_VALUE = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
SOP_CLASS_NOT_SUPPORTED = 0x0122
NO_SUCH_ACTION_TYPE = 0x0123
NOT_AUTHORIZED = 0x0124  # Refused: Not authorized
OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900  # Error: Data Set does not match SOP Class
CANNOT_UNDERSTAND = 0xC000  # Error: Cannot understand (0xCxxx), as a C-FIND answers it
CANNOT_PARSE = 0xC210  # Cannot understand: a C-STORE data set the box cannot parse


def is_success_or_warning(status: int) -> bool:
    return status == SUCCESS or status in (0x0001, 0x0107, 0x0116) or (status & 0xF000) == 0xB000


def is_transient(status: int) -> bool:
    """Out of resources (0xA7xx) and processing failure may pass on a later try."""
    return (status & 0xFF00) == 0xA700 or status == PROCESSING_FAILURE
