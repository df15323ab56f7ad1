"""The container writer's version rule (SPEC.md §3): the lowest minor version that defines
every feature used, in both the header and the footer."""

from __future__ import annotations

import io

import pytest

from onnxz.container import MAJOR, MINOR, ContainerReader, ContainerWriter


def _written(tmp_path, minor_needed: int | None):
    out = io.BytesIO()
    writer = ContainerWriter(out, writer="test")
    writer.add_chunk([b"abc"], count=3)
    if minor_needed is not None:
        writer.require_minor(minor_needed)
    index = writer.finish(b"graph", [])
    path = tmp_path / "c.onnxz"
    path.write_bytes(out.getvalue())
    return path, index


@pytest.mark.parametrize("needed", [None, MINOR, MINOR + 1, MINOR + 3])
def test_writer_declares_the_lowest_minor_version_that_covers_its_features(tmp_path, needed):
    path, index = _written(tmp_path, needed)
    expected = MINOR if needed is None else max(MINOR, needed)
    assert index.version == (MAJOR, expected)
    with ContainerReader(path) as reader:  # header and footer agree, CRCs hold
        assert reader.index.version == (MAJOR, expected)
    assert int.from_bytes(path.read_bytes()[10:12], "little") == expected  # header minor


def test_a_file_truncated_while_open_gives_corrupt_data_not_a_crash(tmp_path):
    """Issue 11 item 1: the reader reads by position and checks lengths (no memory map,
    so no SIGBUS when the file shrinks under it)."""
    from onnxz.errors import CorruptDataError

    out = io.BytesIO()
    writer = ContainerWriter(out, writer="test")
    chunk = writer.add_chunk([b"x" * 5000], count=5000)
    writer.finish(b"graph", [])
    path = tmp_path / "c.onnxz"
    path.write_bytes(out.getvalue())
    with ContainerReader(path) as reader:
        assert reader.chunk_bytes(chunk, "t") == b"x" * 5000
        with open(path, "r+b") as f:
            f.truncate(1000)
        with pytest.raises(CorruptDataError, match="truncated or changed"):
            reader.chunk_bytes(chunk, "t")
