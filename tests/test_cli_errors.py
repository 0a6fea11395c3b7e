"""Issue 14 row 8 at the CLI: a path problem that escapes a command is one line naming the path."""

from __future__ import annotations

import errno
import os

import pytest

from cosmos.cli import main
from cosmos.errors import describe_os_error


def test_output_path_that_is_a_file_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("my notes")
    rc = main(["phantom", str(out), "--n-source", "1", "--n-target", "1", "--n-val", "1", "--no-preview"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith(f"cosmos: error: {out}")
    assert "unexpected error" not in err[-1] and "Traceback" not in "\n".join(err)
    assert out.read_text() == "my notes"  # nothing lost


def test_describe_os_error_names_loops_and_dangling_links(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    with pytest.raises(OSError) as info:
        open(loop)
    assert describe_os_error(info.value) == f"{loop}: symlink loop (too many levels of symbolic links)"
    dangling = tmp_path / "dangling"
    os.symlink(tmp_path / "gone", dangling)
    with pytest.raises(OSError) as info:
        open(dangling)
    assert (
        describe_os_error(info.value)
        == f"{dangling}: dangling symlink (points to {tmp_path / 'gone'}, which does not exist)"
    )
    assert (
        describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/x")) == "/x: no space left on the device"
    )
    assert describe_os_error(FileExistsError(errno.EEXIST, "File exists", "/a", None, "/b")).startswith("/a -> /b: ")
