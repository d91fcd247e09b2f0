"""Ingest: the DICOM listener, the durable spool and study assembly."""
