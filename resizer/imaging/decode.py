"""Decoding pixels, strictly, and the one mapping from what Pillow raises to our error codes.

Every call into Pillow that parses client bytes runs inside ``pillow_errors``,
so a decode failure ends as ``corrupt_image`` (or ``image_too_large``) wherever
it happens.  Pixels are decoded in one place only (``decode`` and ``frames``):
a step that reads metadata must not load the image, or a truncated file would
be found "already loaded" here with its missing part left blank.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Iterator

from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import CorruptImage, ImageTooLarge

# What Pillow's decoders raise on garbage (found by fuzzing: the AVIF plugin
# raises RuntimeError, the GIF reader IndexError, others struct.error...).
# Only ever caught around calls into Pillow, so our own bugs are not hidden.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, RuntimeError,
                 ArithmeticError, struct.error, MemoryError)


@contextlib.contextmanager
def pillow_errors(what: str) -> Iterator[None]:
    """Run Pillow on client bytes: its failures become our errors, naming ``what`` ("The PNG data", ...).

    Pillow's warnings about odd files are noise, except the decompression-bomb
    warning, which is an error.  Our own ``ResizerError``s pass through.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"{what} declares more pixels than the limit.") from None
    except UnidentifiedImageError:
        raise CorruptImage(f"{what} is not a valid image of its format.") from None
    except DECODE_ERRORS as exc:
        raise CorruptImage(f"{what} is corrupt or truncated ({_short(exc)}).") from None


def decode(image: Image.Image) -> Image.Image:
    """Decode a still image's pixels, failing on any error (a truncated file is never padded out)."""
    _require_strict()
    with pillow_errors(f"The {image.format} data"):
        image.load()
    return image


def frame_count(image: Image.Image, limit: int) -> int:
    with pillow_errors("The animation"):
        count = int(getattr(image, "n_frames", 1))
    if count > limit:
        raise ImageTooLarge(f"The animation has {count} frames; the limit is {limit}.")
    return count


def frames(image: Image.Image, n_frames: int) -> Iterator[Image.Image]:
    """Each frame, decoded and composed (as RGBA, so every frame of an animation has one mode)."""
    _require_strict()
    icc = image.info.get("icc_profile")
    for index in range(n_frames):
        with pillow_errors(f"Frame {index + 1} of the animation"):
            image.seek(index)
            frame = image.convert("RGBA")
        frame.info = {"duration": image.info.get("duration")}
        if icc:
            frame.info["icc_profile"] = icc
        yield frame


def _require_strict() -> None:
    # Process-wide and off by default; were anything to turn it on, truncated
    # files would decode "successfully" with blank rows.
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on; the kernel refuses to decode")


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]
