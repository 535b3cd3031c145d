"""config/archiverd.toml documents every setting, at its default, and loads as written."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from archiverd.config import Settings, SourceSettings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "archiverd.toml"
_SECTION = re.compile(r"^\s*#?\s*\[\[?(?P<name>[a-z_]+)\]\]?\s*$")
_KEY = re.compile(r"^\s*#?\s*(?P<key>[a-z_]+)\s*=")


def documented_keys() -> set[str]:
    """``section.key`` for every key line, set or commented out (``# key = ...``)."""
    keys: set[str] = set()
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        if header := _SECTION.match(line):
            section = header["name"]
        elif key := _KEY.match(line):
            keys.add(f"{section}.{key['key']}" if section else key["key"])
    return keys


def model_keys() -> set[str]:
    """``section.key`` for every field of every section of `Settings`."""
    keys: set[str] = set()
    for section, field in Settings.model_fields.items():
        model: Any = SourceSettings if section == "sources" else field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            keys.add(section)  # a top-level key such as `host` or `worker_processes`
            continue
        keys.update(f"{section}.{name}" for name in model.model_fields)
    return keys


def test_every_setting_is_documented() -> None:
    """Each field of Settings appears in the example file, and nothing else does."""
    assert documented_keys() == model_keys()


def test_example_loads_and_matches_the_defaults() -> None:
    """The file loads with load_settings; every value it sets is the default (but sources)."""
    settings = load_settings(EXAMPLE)
    defaults = Settings()
    for section in Settings.model_fields:
        if section != "sources":  # top-level keys and sections alike
            assert getattr(settings, section) == getattr(defaults, section), section
    raw = tomllib.loads(EXAMPLE.read_text())
    assert [s.kind for s in settings.sources] == [s["kind"] for s in raw["sources"]]
    for name, value in SourceSettings.model_fields.items():
        if not value.is_required():
            assert getattr(settings.sources[0], name) == value.default, name
