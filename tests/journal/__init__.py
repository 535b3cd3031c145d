"""Tests of archiverd.journal."""
