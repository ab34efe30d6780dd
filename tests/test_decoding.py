"""Damaged files never give invented pixels: they fail with a code, or decode exactly as a strict decode does.

For every accepted input format (animated GIF and WebP too), generated files
are cut short at several points and have single bits flipped.  The kernel must
then either raise one of our errors (a ``ResizerError`` with a code) or hand
the encoder exactly the pixels of a *strict decode* of the same bytes:

    Image.open + for every frame: seek, load() (ImageFile.LOAD_TRUNCATED_IMAGES
    off, as Pillow's default), composed to RGBA, then the EXIF orientation the
    file declares, applied to every frame.

The outputs are asked at the source's own size (fit=fill, so no resample) and
captured just before encoding, so the comparison is exact, not a tolerance.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

import pillow_heif
import pytest
from PIL import Image, ImageDraw, ImageFile

from resizer.errors import ResizerError
from resizer.imaging import ImageLimits, JobSpec, OutputSpec, pipeline, process

pillow_heif.register_heif_opener()

SIZE = (64, 48)
LIMITS = ImageLimits(max_input_pixels=1_000_000)  # a flipped header bit must not make a test slow
CUTS = (0.05, 0.25, 0.5, 0.75, 0.95)
FLIPS = 12
# Pillow's own table (ImageOps.exif_transpose): orientation -> the transpose that makes the picture upright.
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _picture(seed: int, mode: str = "RGB") -> Image.Image:
    """Detail everywhere (noise under shapes), so a missing part of the file shows in the pixels."""
    rng = random.Random(seed)
    image = Image.effect_noise(SIZE, 60).convert(mode)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(SIZE[0]), rng.randrange(SIZE[1])
        colour = tuple(rng.randrange(256) for _ in mode)
        draw.rectangle((x, y, x + rng.randrange(8, 30), y + rng.randrange(8, 20)), fill=colour)
    return image


def _save(fmt: str, frames: int = 1, mode: str = "RGB", **params) -> bytes:
    pictures = [_picture(i, mode) for i in range(frames)]
    buf = io.BytesIO()
    if frames > 1:
        params = {"save_all": True, "append_images": pictures[1:], "duration": 80, "loop": 0, **params}
    pictures[0].save(buf, fmt, **params)
    return buf.getvalue()


SOURCES = {
    "jpeg": lambda: _save("JPEG", quality=90),
    "jpeg_progressive": lambda: _save("JPEG", quality=90, progressive=True),
    "png": lambda: _save("PNG"),
    "png_alpha_interlaced": lambda: _save("PNG", mode="RGBA", interlace=1),
    "gif": lambda: _save("GIF"),
    "gif_animated": lambda: _save("GIF", frames=3),
    "webp_lossy": lambda: _save("WEBP", quality=80),
    "webp_lossless_alpha": lambda: _save("WEBP", mode="RGBA", lossless=True),
    "webp_animated": lambda: _save("WEBP", frames=3, lossless=True),
    "avif": lambda: _save("AVIF", quality=70),
    "tiff": lambda: _save("TIFF"),
    "tiff_lzw": lambda: _save("TIFF", compression="tiff_lzw"),
    "bmp": lambda: _save("BMP"),
    "heic": lambda: _save("HEIF", quality=80),
}


@functools.cache
def source(name: str) -> bytes:
    return SOURCES[name]()


def _damaged(name: str) -> list[tuple[str, bytes]]:
    data = source(name)
    cases = [(f"cut{round(f * 100)}%", data[: int(len(data) * f)]) for f in CUTS]
    cases.append(("cut-last-byte", data[:-1]))
    if name.startswith("png"):  # well-formed chunks around image data that stops early: the case of issue 13
        cases += [(f"idat-cut{round(f * 100)}%", _png_with_short_idat(data, f)) for f in (0.3, 0.9)]
    rng = random.Random(name)
    for _ in range(FLIPS):
        pos, bit = rng.randrange(len(data)), rng.randrange(8)
        flipped = bytearray(data)
        flipped[pos] ^= 1 << bit
        cases.append((f"flip@{pos}.{bit}", bytes(flipped)))
    return cases


def _png_with_short_idat(data: bytes, fraction: float) -> bytes:
    """The PNG with its compressed image data cut short, in valid chunks (right lengths and CRCs), then IEND."""
    pos, head, idat = 8, data[:8], b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        elif kind != b"IEND":
            head += data[pos : pos + 12 + length]
        pos += 12 + length

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return head + chunk(b"IDAT", idat[: int(len(idat) * fraction)]) + chunk(b"IEND", b"")


CASES = [(name, label, data) for name in SOURCES for label, data in _damaged(name)]


def strict_decode(data: bytes) -> list[Image.Image]:
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    image = Image.open(io.BytesIO(data))
    image.load()
    orientation = image.getexif().get(0x0112, 1)
    pictures = []
    for index in range(getattr(image, "n_frames", 1)):
        image.seek(index)
        image.load()
        picture = image.convert("RGBA")
        if orientation in _UPRIGHT:
            picture = picture.transpose(_UPRIGHT[orientation])
        pictures.append(picture)
    return pictures


def _kernel(data: bytes, animated: bool, monkeypatch) -> list[Image.Image]:
    """Run the kernel at the source's size and capture what it hands the encoder."""
    captured: list[Image.Image] = []

    def still(image, fmt, quality):
        captured.append(image.copy())
        return b""

    def animation(frames, durations, loop, fmt, quality):
        captured.extend(f.copy() for f in frames)
        return b""

    monkeypatch.setattr(pipeline, "encode", still)
    monkeypatch.setattr(pipeline, "encode_animation", animation)
    # 'auto' keeps an animation animated (every frame decoded); 'png' keeps alpha, so nothing is flattened.
    spec = OutputSpec("o", SIZE[0], SIZE[1], "fill", "center", True, "auto" if animated else "png", None, (0, 0, 0))
    process(data, JobSpec((spec,)), LIMITS)
    return captured


@pytest.mark.parametrize("name", SOURCES)
def test_the_undamaged_files_decode_exactly(name, monkeypatch):
    """The comparison below is meaningful: intact files pass it, pixel for pixel."""
    animated = "animated" in name
    got = _kernel(source(name), animated, monkeypatch)
    want = strict_decode(source(name))
    assert len(got) == (len(want) if animated else 1) and (len(want) > 1) == animated
    for ours, reference in zip(got, want):
        assert ours.convert("RGBA").tobytes() == reference.tobytes()


@pytest.mark.parametrize("name, label, data", CASES, ids=[f"{n}-{label}" for n, label, _ in CASES])
def test_a_damaged_file_fails_with_a_code_or_decodes_exactly_as_a_strict_decode(name, label, data, monkeypatch):
    animated = "animated" in name
    try:
        got = _kernel(data, animated, monkeypatch)
    except ResizerError as exc:
        assert exc.code in ("corrupt_image", "unsupported_image_format", "image_too_large", "missing_image")
        return
    try:
        want = strict_decode(data)
    except Exception as exc:  # noqa: BLE001 - any failure of the strict decode is the point
        pytest.fail(f"the kernel succeeded on bytes a strict decode refuses ({type(exc).__name__}: {exc})")
    if not animated:
        want = want[:1]
    assert len(got) == len(want), "frames were lost or invented"
    for index, (ours, reference) in enumerate(zip(got, want)):
        assert ours.size == reference.size, f"frame {index}"
        assert ours.convert("RGBA").tobytes() == reference.tobytes(), f"frame {index}: pixels differ"
