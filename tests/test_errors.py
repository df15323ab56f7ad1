"""Bad input: typed errors, no partial output, the input untouched."""

from __future__ import annotations

import hashlib
import struct
import zlib

import msgpack
import pytest
import zstandard
from models import mlp

import onnxz
from onnxz import container


@pytest.fixture
def packed(tmp_path):
    path = tmp_path / "m.onnxz"
    onnxz.save(mlp(), path, lossless=True)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(onnxz.InputNotFoundError):
        onnxz.load(tmp_path / "nope.onnxz")
    with pytest.raises(onnxz.InputNotFoundError):
        onnxz.save(tmp_path / "nope.onnx", tmp_path / "out.onnxz")
    assert not (tmp_path / "out.onnxz").exists()


def test_non_onnx_input(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf at all \xff\xfe" * 10)
    with pytest.raises(onnxz.InvalidModelError):
        onnxz.save(bad, tmp_path / "out.onnxz")
    assert list(tmp_path.iterdir()) == [bad]


def test_onnxz_given_to_pack(packed, tmp_path):
    with pytest.raises(onnxz.InvalidModelError, match="onnxz file"):
        onnxz.save(packed, tmp_path / "again.onnxz")


def test_non_onnxz_input(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(mlp().SerializeToString())
    with pytest.raises(onnxz.FormatError, match="not an onnxz file"):
        onnxz.load(onnx_file)


def test_text_mode_damage_is_named(packed, tmp_path):
    data = packed.read_bytes().replace(b"\r\n", b"\n", 1)
    damaged = tmp_path / "crlf.onnxz"
    damaged.write_bytes(data)
    with pytest.raises(onnxz.OnnxzError):
        onnxz.load(damaged)


@pytest.mark.parametrize("keep", [0, 7, 16, 100, -41, -1])
def test_truncated_file(packed, tmp_path, keep):
    data = packed.read_bytes()
    cut = tmp_path / "cut.onnxz"
    cut.write_bytes(data[:keep])
    with pytest.raises((onnxz.FormatError, onnxz.CorruptDataError)):
        onnxz.load(cut)


def test_every_bit_flip_in_every_section_is_detected(packed, tmp_path):
    data = bytearray(packed.read_bytes())
    original = onnxz.load(packed).SerializeToString()
    step = max(1, len(data) // 400)
    for pos in range(0, len(data), step):
        flipped = bytearray(data)
        flipped[pos] ^= 1 << (pos % 8)
        target = tmp_path / "flip.onnxz"
        target.write_bytes(flipped)
        try:
            decoded = onnxz.load(target).SerializeToString()
        except onnxz.OnnxzError:
            continue
        # Padding bytes carry nothing: a flip there must decode to the very same model.
        assert decoded == original, f"flip at byte {pos} decoded to a different model"


def _rewrite_index(path, mutate):
    """Rewrite the index of ``path`` through ``mutate(fields)``, fixing up the CRCs."""
    data = bytearray(path.read_bytes())
    footer = data[-container.FOOTER_SIZE:]
    off, length, _, _, major, minor, _, end = struct.unpack("<QQQIHHI4s", footer)
    fields = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(bytes(data[off:off + length])))
    mutate(fields)
    raw = msgpack.packb(fields, use_bin_type=True)
    packed = zstandard.ZstdCompressor().compress(raw)
    body = struct.pack("<QQQIHH", off, len(packed), len(raw), zlib.crc32(packed), major, minor)
    new_footer = body + struct.pack("<I", zlib.crc32(body)) + end
    path.write_bytes(bytes(data[:off]) + packed + new_footer)


def test_unknown_optional_index_field_is_ignored(packed):
    before = onnxz.load(packed).SerializeToString()
    _rewrite_index(packed, lambda f: f.update(future_feature={"x": 1}))
    assert onnxz.load(packed).SerializeToString() == before


def test_future_major_version_is_refused(packed):
    data = bytearray(packed.read_bytes())
    data[8:10] = struct.pack("<H", 2)
    data[12:16] = struct.pack("<I", zlib.crc32(bytes(data[:12])))
    packed.write_bytes(data)
    with pytest.raises(onnxz.FormatError, match=r"2\.0 is not supported"):
        onnxz.load(packed)


def test_unknown_codec_is_named(packed):
    def mutate(fields):
        fields["tensors"][0]["codec"] = "wavelet9"

    _rewrite_index(packed, mutate)
    with pytest.raises(onnxz.FormatError, match="wavelet9"):
        onnxz.load(packed)


def test_absurd_shape_is_refused_before_allocation(packed):
    def mutate(fields):
        t = fields["tensors"][0]
        t["shape"] = [10**6, 10**6]
        t["chunks"] = [[t["chunks"][0][0], t["chunks"][0][1], 10**12, t["chunks"][0][3]]]

    _rewrite_index(packed, mutate)
    with pytest.raises(onnxz.LimitExceededError):
        onnxz.load(packed)


def test_overlapping_chunks_are_refused(packed):
    def mutate(fields):
        fields["tensors"][1]["chunks"][0][0] = fields["tensors"][0]["chunks"][0][0]

    _rewrite_index(packed, mutate)
    with pytest.raises(onnxz.FormatError, match="overlapping"):
        onnxz.load(packed)


def test_existing_output_needs_force_and_input_is_untouched(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(mlp().SerializeToString())
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "m.onnxz"
    out.write_bytes(b"keep me")
    with pytest.raises(onnxz.OutputExistsError):
        onnxz.save(src, out)
    assert out.read_bytes() == b"keep me"
    onnxz.save(src, out, force=True)
    assert out.read_bytes()[:8] == container.MAGIC
    with pytest.raises(onnxz.OutputPathError):
        onnxz.save(src, src, force=True)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest


def test_failed_unpack_leaves_no_output(packed, tmp_path):
    data = bytearray(packed.read_bytes())
    data[100] ^= 0xFF
    packed.write_bytes(data)
    out = tmp_path / "out.onnx"
    with pytest.raises(onnxz.OnnxzError):
        onnxz.unpack(packed, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnxz"]


def test_missing_external_data_file(tmp_path):
    model = mlp()
    import onnx

    onnx.save_model(model, tmp_path / "ext.onnx", save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(onnxz.InvalidModelError, match="external data"):
        onnxz.save(tmp_path / "ext.onnx", tmp_path / "out.onnxz")
    assert not (tmp_path / "out.onnxz").exists()
