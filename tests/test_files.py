"""seqjepa/files.py: files written whole or not at all, and the temporary files of killed writers cleaned up."""
import json
import os
import subprocess

import pytest

from seqjepa import files


def test_stale_temp_files_go_live_ones_stay(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".latest.pt.tmp{dead.pid}").write_bytes(b"x")
    (tmp_path / f".config.json.tmp{dead.pid}").write_text("{")
    (tmp_path / f".latest.pt.tmp{os.getppid()}").write_bytes(b"x")  # a live writer's
    (tmp_path / "notes.tmp1").write_text("not ours")
    removed = files.remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".latest.pt.tmp{dead.pid}", f".config.json.tmp{dead.pid}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".latest.pt.tmp{os.getppid()}", "notes.tmp1"])


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "config.json"
    files.write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        files.write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
