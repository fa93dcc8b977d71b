"""Write-then-rename (fbn_prune._io.atomic): the old file or the new one, never half; permissions as promised."""

from __future__ import annotations

import os

import pytest

from fbn_prune._io.atomic import atomic_write, replacing


def test_atomic_write_keeps_the_files_permissions(tmp_path):
    path = tmp_path / "sub" / "f.json"
    atomic_write(path, "one")
    assert path.read_text() == "one"
    os.chmod(path, 0o600)
    atomic_write(path, "two ü")
    assert path.read_text(encoding="utf-8") == "two ü" and path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["f.json"], "no temporary file left"


def test_replacing_leaves_the_old_file_when_the_block_fails(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    with pytest.raises(RuntimeError):
        with replacing(path, keep_mode=False) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.gguf"]
    with replacing(path, keep_mode=False) as tmp:
        tmp.write_bytes(b"new")
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o666 & ~umask
