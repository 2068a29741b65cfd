"""The one atomic writer and the one output-folder guard (softseg.files)."""

from __future__ import annotations

import os
import stat

import pytest

from softseg.errors import SoftsegError
from softseg.files import (atomic_path, prepare_out_dir, publish_folder, temp_folder,
                           write_json_atomic, write_text_atomic)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    with pytest.raises(SoftsegError, match=r"a.txt: already exists"):
        write_text_atomic(target, "new", overwrite=False)


def test_two_writers_of_one_file_never_share_a_temporary_name(tmp_path):
    target = tmp_path / "map.nii.gz"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert first.name.endswith(".nii.gz")  # libraries that pick a format by name still do
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    # the writer that finishes last wins, whole: never a mix and no temporary left
    assert target.read_bytes() == b"1" and os.listdir(tmp_path) == ["map.nii.gz"]


def test_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "x.json", {"v": float("nan")})
        folder = temp_folder(tmp_path / "eval")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o640
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert (tmp_path / "x.json").read_text() == '{\n  "v": null\n}\n'


def test_publish_replaces_an_empty_folder_and_merges_into_a_full_one(tmp_path):
    out = tmp_path / "out"
    tmp = temp_folder(out)
    (tmp / "a").write_text("1")
    publish_folder(tmp, out)
    assert sorted(os.listdir(out)) == ["a"] and not tmp.exists()
    tmp = temp_folder(out)
    (tmp / "a").write_text("2")
    (out / "mine").write_text("kept")
    publish_folder(tmp, out)
    assert (out / "a").read_text() == "2" and (out / "mine").read_text() == "kept"


def test_the_guard_offers_only_the_ways_out_a_command_has(tmp_path):
    out = tmp_path / "o"
    assert prepare_out_dir(out).is_dir()
    (out / "f").write_text("x")
    with pytest.raises(SoftsegError) as refused:
        prepare_out_dir(out, overwrite=None, resume=False, what="compare")
    assert str(refused.value) == (f"{out}: output folder is not empty (an earlier compare run?); "
                                  "choose another --out or pass --resume to continue it")
    with pytest.raises(SoftsegError, match=r"choose another OUT or pass --overwrite to replace its outputs$"):
        prepare_out_dir(out, resume=None, what="labels", option="OUT")
    assert prepare_out_dir(out, overwrite=True) == out and prepare_out_dir(out, resume=True) == out
    with pytest.raises(SoftsegError, match=r"f: expected an output folder, found a file"):
        prepare_out_dir(out / "f")
    assert not (tmp_path / "new").exists() and prepare_out_dir(tmp_path / "new", create=False)
    assert not (tmp_path / "new").exists()
