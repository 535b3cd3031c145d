"""Log sources: where container logs are discovered (see `base.Source`)."""

from __future__ import annotations

from archiverd.config import SourceSettings
from archiverd.formats.records import BadInput
from archiverd.sources.base import BaseSource, Candidate, Source, StreamInfo
from archiverd.sources.cri import CriSource
from archiverd.sources.demo import DemoSource
from archiverd.sources.directory import DirectorySource
from archiverd.sources.docker import DockerSource

__all__ = ["BaseSource", "Candidate", "Source", "StreamInfo", "make_source"]

_KINDS: dict[str, type[BaseSource]] = {
    "docker": DockerSource,
    "cri": CriSource,
    "directory": DirectorySource,
    "demo": DemoSource,
}


def make_source(settings: SourceSettings, on_bad: BadInput | None = None) -> BaseSource:
    """The source implementation for `settings.kind`."""
    return _KINDS[settings.kind](settings, on_bad)
