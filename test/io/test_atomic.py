"""``atomic_path``: the target is replaced whole on success and untouched on failure, with no temp files left."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivfusion_ros.io.atomic import atomic_path


def test_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("one")
    assert target.read_text() == "one"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "one"
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]
