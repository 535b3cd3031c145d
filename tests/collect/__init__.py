"""Tests of archiverd.collect."""
