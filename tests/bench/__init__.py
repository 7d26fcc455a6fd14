"""`make bench`: the box's ingest and delivery rates beside DCMTK and Orthanc peers."""
