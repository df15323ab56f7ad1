"""The container writer's version rule (SPEC.md §3): the lowest minor version that defines
every feature used, in both the header and the footer."""

from __future__ import annotations

import dataclasses
import io
import math
import os
import random
import zlib

import pytest

from onnxz.container import MAJOR, MINOR, ContainerReader, ContainerWriter, crc32_combine
from onnxz.errors import CorruptDataError


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


@pytest.mark.parametrize("seed", range(20))
def test_crc32_combine_is_the_crc32_of_the_concatenation(seed):
    rng = random.Random(seed)
    parts = [rng.randbytes(rng.choice([0, 1, 3, 64, rng.randrange(5000)]))
             for _ in range(rng.randrange(1, 6))]
    crc = 0
    for part in parts:
        crc = crc32_combine(crc, zlib.crc32(part), len(part))
    assert crc == zlib.crc32(b"".join(parts))


def test_a_chunk_file_is_opened_again_only_if_it_is_the_same_file(tmp_path):
    path, _ = _written(tmp_path, None)
    with ContainerReader(path) as reader:
        file = reader.file
        fd = file.open()  # the reader's own descriptor, duplicated
        assert fd != file.fd and os.fstat(fd).st_ino == file.inode
        os.close(fd)
        elsewhere = dataclasses.replace(file, fd=-1)  # as in a spawned worker: by path
        os.close(elsewhere.open())
        path.rename(tmp_path / "moved.onnxz")
        path.write_bytes(b"another file")
        with pytest.raises(CorruptDataError, match="replaced while it was being read"):
            elsewhere.open()
        os.close(file.open())  # the inherited descriptor still reads the right file


def test_informative_figures_are_stored_rounded_and_read_back_as_stored(tmp_path):
    """``entropy_bits`` as whole bits, ``sensitivity`` to 8 significant bits (their float64
    low bytes would be incompressible noise in the index); the decoded values are exact."""
    from onnxz.container import INFORMATIVE_BITS, TensorEntry, informative

    out = io.BytesIO()
    writer = ContainerWriter(out, writer="test")
    chunk = writer.add_chunk([b"abcd"], count=1)
    entry = TensorEntry("w", ("graph", "initializer", 0), "float32", (1,), "lossless",
                        {"mode": "raw"}, (chunk,), zlib.crc32(b"abcd"), entropy_bits=129.7,
                        sensitivity=99.62051535362374)
    writer.finish(b"graph", [entry])
    path = tmp_path / "c.onnxz"
    path.write_bytes(out.getvalue())
    with ContainerReader(path) as reader:
        (read,) = reader.index.tensors
    assert read.entropy_bits == 130
    assert read.sensitivity == informative(99.62051535362374) == 99.5
    for value in (0.1, 3e-9, 7.0, -2.5e6, 1 / 3):
        rounded = informative(value)
        assert abs(rounded - value) <= abs(value) * 2.0 ** -INFORMATIVE_BITS
        lowest_bit = math.floor(math.log2(abs(rounded))) - INFORMATIVE_BITS + 1
        mantissa = abs(rounded) / 2.0**lowest_bit
        assert mantissa == int(mantissa)  # at most INFORMATIVE_BITS significant bits
