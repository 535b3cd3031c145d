"""Destinations: where packed objects are stored (``s3://`` or ``file://``)."""
