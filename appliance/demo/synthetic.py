"""Synthetic DICOM studies for the demo, the tests and the benchmarks.

The content is a noisy anatomical phantom, not a constant, so lossless
compressors reach realistic ratios (about 2.5x to 4x). Files are proper
Part 10 files in Explicit VR Little Endian with the type 1 attributes of their
IOD filled in.

UIDs derive from the Study Instance UID: pass ``study_uid`` and the same
arguments give the same files (on the same day, unless ``study_date`` is
given too); leave it out for a fresh random study.
"""

from appliance.demo.ct import write_ct_study
from appliance.demo.mg import write_mg_study
from appliance.demo.multiframe import write_multiframe
from appliance.demo.parts import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    MG_FOR_PRESENTATION_STORAGE,
)

__all__ = ["CT_IMAGE_STORAGE", "ENHANCED_CT_IMAGE_STORAGE", "MG_FOR_PRESENTATION_STORAGE",
           "write_ct_study", "write_mg_study", "write_multiframe"]
