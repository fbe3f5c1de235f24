"""atomic_output: temp sibling + rename for files and directories; nothing left behind on failure."""

from __future__ import annotations

import pytest

from crrxr.io.atomic import atomic_output, temporary_sibling


def _names(d):
    return sorted(p.name for p in d.iterdir())


def test_file_success_and_temp_is_a_hidden_sibling(tmp_path):
    final = tmp_path / "out.fits"
    with atomic_output(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.fits.tmp-")
        assert not tmp.exists() and not final.exists()
        tmp.write_bytes(b"abc")
        assert not final.exists()  # readers never see a partial file under the final name
    assert final.read_bytes() == b"abc"
    assert _names(tmp_path) == ["out.fits"]


def test_directory_success(tmp_path):
    final = tmp_path / "store.zarr"
    with atomic_output(final) as tmp:
        (tmp / "sub").mkdir(parents=True)
        (tmp / "sub" / "x").write_text("1")
    assert (final / "sub" / "x").read_text() == "1"
    assert _names(tmp_path) == ["store.zarr"]


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_failure_removes_temp_and_keeps_final_absent(tmp_path, kind):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), atomic_output(final) as tmp:
        if kind == "file":
            tmp.write_bytes(b"partial")
        else:
            (tmp / "a").mkdir(parents=True)
            (tmp / "a" / "b").write_text("partial")
        raise RuntimeError("boom")
    assert _names(tmp_path) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    final = tmp_path / "store.zarr"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(FileExistsError, match="store.zarr"), atomic_output(final):
        pass
    # a failed overwrite leaves the old data intact
    with pytest.raises(ValueError), atomic_output(final, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
        raise ValueError("bad input")
    assert _names(final) == ["old"]
    with atomic_output(final, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("new")
    assert _names(final) == ["new"]
    assert _names(tmp_path) == ["store.zarr"]
    # file over file
    f = tmp_path / "a.fits"
    f.write_text("old")
    with atomic_output(f, overwrite=True) as tmp:
        tmp.write_text("new")
    assert f.read_text() == "new"


def test_missing_parent_directory(tmp_path):
    with (
        pytest.raises(FileNotFoundError, match="does not exist"),
        atomic_output(tmp_path / "no" / "x"),
    ):
        pass


def test_nothing_created_means_nothing_renamed(tmp_path):
    with atomic_output(tmp_path / "x"):
        pass
    assert _names(tmp_path) == []


def test_temporary_sibling_is_unique(tmp_path):
    names = {temporary_sibling(tmp_path / "x").name for _ in range(50)}
    assert len(names) == 50
