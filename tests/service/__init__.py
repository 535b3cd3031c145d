"""Tests of archiverd.service."""
