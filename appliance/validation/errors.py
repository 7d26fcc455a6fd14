"""What refuses a received instance: the failure status and a reason that never holds a
patient value or a UID (PS3.4 Storage Service Class, C-STORE failures).

- `statuses.CANNOT_PARSE` (0xC210, in "Error: Cannot understand" 0xCxxx): the file
  cannot be parsed: not DICOM, a truncated value, malformed encoding or sequences, an
  encoding other than its transfer syntax says.
- `statuses.DATASET_MISMATCH` (0xA900, "Error: Data Set does not match SOP Class"): it
  parses, but the SOP Class, SOP Instance or Study Instance UID is missing or malformed,
  the SOP Class or Instance UID differs from the command (the file meta), or native Pixel
  Data has a length the image attributes contradict.
"""

from __future__ import annotations

from appliance import statuses


class InvalidDataset(Exception):
    """A received data set the box refuses; `status` is the DIMSE failure status to send.

    `reason` is short and never holds a patient value or a UID.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"0x{status:04X}: {reason}")
        self.status = status
        self.reason = reason


def unreadable(reason: str) -> InvalidDataset:
    return InvalidDataset(statuses.CANNOT_PARSE, reason)


def mismatch(reason: str) -> InvalidDataset:
    return InvalidDataset(statuses.DATASET_MISMATCH, reason)
