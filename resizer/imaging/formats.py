"""Which formats come in and go out, and a header-only probe of an upload.

The probe reads the container header (magic bytes, then Pillow's lazy open, which
parses headers but decodes no pixels), so the API can refuse unknown formats,
bombs and zero-sized images before anything is stored or queued.  The worker
runs the same probe again, so a job enqueued by anything else is held to the
same rules.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import pillow_heif
from PIL import Image

from ..errors import CorruptImage, ImageTooLarge, MissingImage, UnsupportedImageFormat
from .decode import DECODE_ERRORS, pillow_errors

# Pillow format name -> magic-byte test.  This is the allowlist: only these
# plugins are ever asked to parse client bytes.
_MAGIC = {
    "JPEG": lambda b: b[:3] == b"\xff\xd8\xff",
    "PNG": lambda b: b[:8] == b"\x89PNG\r\n\x1a\n",
    "GIF": lambda b: b[:6] in (b"GIF87a", b"GIF89a"),
    "WEBP": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "AVIF": lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"avif", b"avis"),
    "TIFF": lambda b: b[:4] in (b"II*\x00", b"MM\x00*"),
    "BMP": lambda b: b[:2] == b"BM",
    # iPhone photos.  Checked after AVIF, which shares the ISO-BMFF container.
    "HEIF": lambda b: b[4:8] == b"ftyp" and b[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis",
                                                         b"mif1", b"msf1"),
}
INPUT_FORMATS = tuple(_MAGIC)
# HEIC/HEIF decoding comes from pillow-heif (libheif), the maintained Pillow plugin for it.
pillow_heif.register_heif_opener()

@dataclass(frozen=True)
class OutputFormat:
    name: str  # the API's name
    pil: str  # Pillow's save format
    mime: str
    ext: str
    alpha: bool  # can carry transparency
    animation: bool  # can carry several frames
    default_quality: int | None


OUTPUT_FORMATS = {
    f.name: f
    for f in (
        OutputFormat("jpeg", "JPEG", "image/jpeg", "jpg", False, False, 85),
        OutputFormat("png", "PNG", "image/png", "png", True, False, None),
        OutputFormat("webp", "WEBP", "image/webp", "webp", True, True, 80),
        OutputFormat("avif", "AVIF", "image/avif", "avif", True, False, 60),
        # Not selectable by name; 'auto' keeps an (animated) GIF a GIF.
        OutputFormat("gif", "GIF", "image/gif", "gif", True, True, None),
    )
}
# Input formats that 'auto' keeps as they are.
_WEB_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "GIF": "gif"}


@dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow's name: JPEG, PNG, ...
    width: int  # as stored, before EXIF orientation
    height: int
    orientation: int  # EXIF orientation 1..8
    has_alpha: bool
    animated: bool

    @property
    def oriented_size(self) -> tuple[int, int]:
        """Width and height as displayed, after EXIF orientation."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def sniff(head: bytes) -> str | None:
    """The allowlisted format whose magic bytes ``head`` starts with, or None."""
    for name, test in _MAGIC.items():
        if test(head):
            return name
    return None


def open_image(data: bytes, max_pixels: int) -> tuple[Image.Image, ImageInfo]:
    """Open ``data`` lazily (headers only) and describe it, enforcing the allowlist and pixel limit."""
    if not data:
        raise MissingImage("The image is empty (0 bytes).")
    kind = sniff(data[:16])
    if kind is None:
        raise UnsupportedImageFormat()
    # Our limit is checked below, from the header, with a message that gives
    # the size.  Pillow's own bomb check (warning above MAX_IMAGE_PIXELS, error
    # above twice that, also applied to GIF frames) stays as a backstop; it is
    # only ever raised to our limit, never lowered, as it is process-wide.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    with pillow_errors(f"The {kind} data"):
        image = Image.open(io.BytesIO(data), formats=[kind])
        width, height = image.size
        if width <= 0 or height <= 0:
            raise CorruptImage(f"The {kind} header declares a {width}x{height} image.")
        if width * height > max_pixels:
            raise ImageTooLarge(_too_large(width, height, max_pixels))
        info = ImageInfo(
            format=kind,
            width=width,
            height=height,
            orientation=_orientation(image, data),
            has_alpha=image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info,
            animated=bool(getattr(image, "is_animated", False)),
        )
    return image, info


def choose_format(requested: str, info: ImageInfo) -> "OutputFormat":
    """Resolve 'auto' against the input; other names map directly."""
    if requested != "auto":
        return OUTPUT_FORMATS[requested]
    kept = _WEB_FORMATS.get(info.format)
    if kept == "gif" and not info.animated:
        kept = "png"  # a still GIF is better served as PNG (no 256-colour palette)
    if kept is None:
        kept = "png" if info.has_alpha else "jpeg"
    return OUTPUT_FORMATS[kept]


def _orientation(image: Image.Image, data: bytes) -> int:
    """EXIF orientation 1..8, read without decoding any pixels."""
    if image.format == "PNG" and "exif" not in image.info:
        # Pillow's PNG getexif() loads the whole image to reach an eXIf chunk
        # after the pixel data: a decode here, where its errors would be
        # mistaken for EXIF trouble.  Find the chunk ourselves instead.
        image.info["exif"] = _png_chunk(data, b"eXIf") or b""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except DECODE_ERRORS:  # a broken EXIF block must not sink an otherwise good image
        return 1
    return value if 1 <= value <= 8 else 1


def _png_chunk(data: bytes, kind: bytes) -> bytes | None:
    """The first chunk of ``kind`` in a PNG, found by walking chunk headers (pixel data is skipped, not read)."""
    pos = 8
    while pos + 8 <= len(data):
        length, found = struct.unpack(">I4s", data[pos : pos + 8])
        if found == kind:
            return data[pos + 8 : pos + 8 + length]
        if found == b"IEND":
            break
        pos += 12 + length
    return None


def _too_large(width: int, height: int, limit: int) -> str:
    return f"The image is {width}x{height} ({width * height:,} pixels); the limit is {limit:,} pixels."
