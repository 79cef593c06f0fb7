import os
import stat

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


def test_atomic_outputs_have_the_mode_a_plain_write_gives(tmp_path):
    # mkstemp and mkdtemp make 0600 / 0700: results must be as readable as any file written
    # plainly under the same umask (0022 here: 0644 and 0755)
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "out.txt") as f:
            f.write("x")
        with atomic_dir(tmp_path / "run") as d:
            (d / "a.txt").write_text("1")
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE((tmp_path / p).stat().st_mode)  # noqa: E731
    assert mode("out.txt") == mode("plain.txt") == 0o644
    assert mode("run") == mode("plain") == 0o755
