"""Tests of archiverd.spool."""
