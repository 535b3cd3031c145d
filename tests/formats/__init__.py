"""Tests of archiverd.formats."""
