"""Validation of what a modality sends: refused only when it cannot be kept faithfully
(PRODUCT.md, Guarantees; README's Validation table), else recorded as findings.

- ``header``: `read_header` checks one received Part 10 file, streamed, and says what is
  imperfect (`remarks`); the module docstring has the rules.
- ``elements``: the element walk under it (file or inflated stream), never loading a value
  it does not need.
- ``errors``: the refusals, their statuses and reasons (never a patient value or a UID).
- ``findings``: a study's completeness, from what the store keeps per instance.
"""

from appliance.validation.elements import is_valid_uid
from appliance.validation.errors import InvalidDataset
from appliance.validation.findings import InstanceFacts, study_findings
from appliance.validation.header import (
    InstanceHeader,
    expected_pixel_length,
    read_header,
    read_header_from,
)

__all__ = [
    "InstanceFacts", "InstanceHeader",
    "InvalidDataset", "expected_pixel_length", "is_valid_uid", "read_header", "read_header_from",
    "study_findings",
]
