"""Which syntaxes an instance may travel in (issue 11, part 2: memory bounded whatever
its size: beyond IN_MEMORY_MAX_BYTES only what is streamed)."""

from __future__ import annotations

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
)

from appliance.encoding import IN_MEMORY_MAX_BYTES, UNCOMPRESSED, wire_syntaxes

BIG = IN_MEMORY_MAX_BYTES + 1


def test_a_small_uncompressed_instance_may_be_compressed_or_reencoded():
    syntaxes = wire_syntaxes(ExplicitVRLittleEndian, [JPEGLSLossless], 1000)
    assert syntaxes[:2] == [JPEGLSLossless, ExplicitVRLittleEndian]
    assert set(syntaxes[1:]) == set(UNCOMPRESSED)


def test_a_large_explicit_instance_travels_as_stored_or_streamed_to_implicit():
    assert wire_syntaxes(ExplicitVRLittleEndian, [JPEGLSLossless], BIG) == [
        ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def test_other_large_instances_travel_only_as_stored():
    for stored in (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian):
        assert wire_syntaxes(stored, [JPEGLSLossless], BIG) == [stored]


def test_compressed_instances_always_travel_as_stored():
    assert wire_syntaxes(JPEGLSLossless, [], 1000) == [JPEGLSLossless]
