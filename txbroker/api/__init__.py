"""The broker's operator REST API (staff only)."""
