"""FileDestination: a directory that keeps versions like a versioned bucket."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from archiverd.config import Settings
from archiverd.destinations import open_destination
from archiverd.destinations.filesystem import FileDestination
from archiverd.errors import IntegrityError, ObjectExistsError, PermanentDestinationError
from archiverd.pack import Keyring, load_key_files, pack_stream
from archiverd.pack.commands import unpack_file
from archiverd.pack.container import read_header
from tests.upload.helpers import sha256_b64


def _file(tmp_path: Path, data: bytes, name: str = "body") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


async def test_put_head_download_round_trip(tmp_path: Path) -> None:
    """A stored object reads back byte for byte with its metadata and checksum."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    data = os.urandom(3000)
    stored = await dest.put_file(
        "p/h/a.log.gz.enc", _file(tmp_path, data), {"archiverd-lines": "3"}, sha256_b64(data)
    )
    head = await dest.head("p/h/a.log.gz.enc")
    assert head is not None
    assert head.version_id == stored.version_id
    assert head.size == 3000
    assert head.sha256_b64 == sha256_b64(data)
    assert head.metadata["archiverd-lines"] == "3"
    out = tmp_path / "out"
    await dest.download("p/h/a.log.gz.enc", out)
    assert out.read_bytes() == data
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert await dest.head("p/h/missing") is None


async def test_versions_are_kept_and_listed_newest_first(tmp_path: Path) -> None:
    """Each unconditional PUT adds a version; a delete adds a marker; old versions stay."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    one, two = b"one" * 10, b"two" * 10
    v1 = await dest.put_file("k/a", _file(tmp_path, one), {}, sha256_b64(one))
    v2 = await dest.put_file("k/a", _file(tmp_path, two), {}, sha256_b64(two), if_none_match=False)
    await dest.put_file("k/b", _file(tmp_path, one), {}, sha256_b64(one))
    marker = await dest.delete("k/a")
    versions = [v async for v in dest.list_versions("k/")]
    assert [(v.key, v.version_id) for v in versions] == [
        ("k/a", marker),
        ("k/a", v2.version_id),
        ("k/a", v1.version_id),
        ("k/b", versions[3].version_id),
    ]
    assert versions[0].is_delete_marker
    assert versions[0].is_latest
    assert [v.key async for v in dest.list_latest("k/")] == ["k/b"]
    assert await dest.head("k/a") is None
    old = await dest.head("k/a", v1.version_id)
    assert old is not None
    assert old.sha256_b64 == sha256_b64(one)


async def test_conditional_put_refuses_an_existing_key(tmp_path: Path) -> None:
    """put_file (If-None-Match) on a live key raises ObjectExistsError and adds no version."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    data = b"x" * 100
    await dest.put_file("k", _file(tmp_path, data), {}, sha256_b64(data))
    with pytest.raises(ObjectExistsError):
        await dest.put_file("k", _file(tmp_path, data), {}, sha256_b64(data))
    assert len([v async for v in dest.list_versions("")]) == 1


async def test_checksum_mismatch_stores_nothing(tmp_path: Path) -> None:
    """A body that does not hash to the given SHA-256 is refused and leaves no file behind."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    source = _file(tmp_path, b"actual")
    with pytest.raises(IntegrityError, match="hashes to"):
        await dest.put_file("k", source, {}, sha256_b64(b"expected"))
    assert source.read_bytes() == b"actual"
    assert [v async for v in dest.list_versions("")] == []
    assert [p for p in (tmp_path / "bucket").rglob("*") if p.is_file()] == []


async def test_private_permissions(tmp_path: Path) -> None:
    """Directories are 0700 and version files 0600."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    await dest.check()
    await dest.put_file("a/b/c", _file(tmp_path, b"z"), {}, sha256_b64(b"z"))
    for path in (tmp_path / "bucket").rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == want, path
    assert stat.S_IMODE((tmp_path / "bucket").stat().st_mode) == 0o700


async def test_unsafe_keys_are_refused(tmp_path: Path) -> None:
    """A key with '..' cannot escape the directory."""
    dest = FileDestination((tmp_path / "bucket").as_uri())
    with pytest.raises(PermanentDestinationError, match="not a safe relative path"):
        await dest.put_file("../escape", _file(tmp_path, b"z"), {}, sha256_b64(b"z"))
    assert not (tmp_path / "escape.versions").exists()


async def test_stored_version_is_an_unpackable_container(tmp_path: Path) -> None:
    """`archiverd unpack` decrypts a stored version file directly (header + body)."""
    key = os.urandom(32)
    key_file = tmp_path / "k.key"
    key_file.write_text(base64.b64encode(key).decode())
    key_file.chmod(0o600)
    plain = b'{"log":"hello\\n","stream":"stdout"}\n' * 100
    src, packed = tmp_path / "plain", tmp_path / "packed"
    src.write_bytes(plain)
    with src.open("rb") as fin, packed.open("wb") as fout:
        result = pack_stream(fin, fout, Keyring.from_raw_keys(key))
    dest = FileDestination((tmp_path / "bucket").as_uri())
    stored = await dest.put_file(
        "h/x.log.gz.enc", packed, result.envelope, result.packed_sha256_b64
    )
    version_file = tmp_path / "bucket" / "h" / "x.log.gz.enc.versions" / stored.version_id
    with version_file.open("rb") as fin:
        header = read_header(fin)
    assert {k: header[k] for k in result.envelope} == result.envelope
    out = tmp_path / "restored"
    unpack_file(str(version_file), str(out), load_key_files([key_file]))  # `archiverd unpack`
    assert out.read_bytes() == plain


async def test_factory_defaults_to_the_state_dir_bucket(tmp_path: Path) -> None:
    """With no destination.url, open_destination gives file://<state.dir>/bucket."""
    settings = Settings(state={"dir": tmp_path / "state"})
    dest = open_destination(settings)
    assert isinstance(dest, FileDestination)
    assert dest.root == (tmp_path / "state" / "bucket").resolve()
    assert "keeps every version" in await dest.check()
    await dest.close()


async def test_list_prefixes_yields_host_folders_only(tmp_path: Path) -> None:
    """list_prefixes names the folders one level down, never objects or hidden temp dirs."""
    root = tmp_path / "bucket"
    for folder in ("p/host-a/2026", "p/host-b/2026", "p/.tmp-x", "p/k.log.gz.enc.versions"):
        (root / folder).mkdir(parents=True)
    destination = FileDestination(root.as_uri())
    found = [prefix async for prefix in destination.list_prefixes("p/")]
    assert found == ["p/host-a/", "p/host-b/"]
    assert [prefix async for prefix in destination.list_prefixes("p/host-a")] == ["p/host-a/"]
    assert [prefix async for prefix in destination.list_prefixes("nothing/")] == []
