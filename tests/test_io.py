import pytest

from interp.common.io import atomic_dir, atomic_write


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as f:
        f.write("whole")
    assert target.read_text() == "whole"


def test_atomic_dir_keeps_old_output_on_failure(tmp_path):
    target = tmp_path / "run"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "a.txt").write_text("2")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    with atomic_dir(target) as d:
        (d / "b.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
