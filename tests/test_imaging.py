"""The pipeline on awkward real-world input: orientation, colour, alpha, animation, metadata, quality."""

from __future__ import annotations

import io
import math
import struct

import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from bench.images import jpeg as photo_jpeg
from resizer.errors import CorruptImage, ImageTooLarge, MissingImage, UnsupportedImageFormat
from resizer.imaging import ImageLimits, process, shrink, steps
from resizer.imaging.formats import open_image
from resizer.options import Limits, parse_options
from tests.conftest import BAD, CORPUS, image_bytes

GOOD_DIR = CORPUS / "good"
LIMITS = ImageLimits()


def run(data: bytes, limits: ImageLimits = LIMITS, **options):
    return process(data, parse_options(options, Limits()), limits).outputs


def decode(out) -> Image.Image:
    image = Image.open(io.BytesIO(out.data))
    image.load()
    return image


def mean_diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def psnr(a: Image.Image, b: Image.Image) -> float:
    rms = ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).rms
    mse = sum(v * v for v in rms) / 3
    return 99.0 if mse == 0 else 10 * math.log10(255**2 / mse)


# -- orientation ---------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 6, 8])
def test_corpus_orientations_give_the_upright_picture(n):
    upright = decode(run((GOOD_DIR / "hopper.jpg").read_bytes(), width=64, format="png")[0])
    out = run((GOOD_DIR / f"hopper_orientation_{n}.jpg").read_bytes(), width=64, format="png")[0]
    turned = decode(out)
    assert turned.size == upright.size
    assert mean_diff(turned, upright) < 8, "the EXIF orientation was not applied"


# The inverse of each orientation: what a camera stored to make the upright picture.
_STORED = {
    1: [], 2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
    4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE], 6: [Image.Transpose.ROTATE_90],
    7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_270],
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_eight_orientations(orientation):
    upright = Image.open(io.BytesIO((GOOD_DIR / "hopper.jpg").read_bytes())).convert("RGB").crop((0, 0, 128, 96))  # not square
    stored = upright
    for op in _STORED[orientation]:
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    (out,) = run(buf.getvalue(), width=64, format="png")
    result = decode(out)
    assert result.size == (64, 48)  # width/height swapped back where they should be
    reference = upright.resize((64, 48), Image.Resampling.BICUBIC)
    assert mean_diff(result, reference) < 6
    assert 0x0112 not in result.getexif()


# -- metadata and colour ----------------------------------------------------------------
def test_gps_and_camera_exif_are_stripped():
    source = Image.open(io.BytesIO((GOOD_DIR / "exif_gps.jpg").read_bytes()))
    assert 0x8825 in source.getexif()  # the corpus file has a GPS block
    for fmt in ("jpeg", "png", "webp", "avif"):
        result = decode(run((GOOD_DIR / "exif_gps.jpg").read_bytes(), format=fmt)[0])
        assert len(result.getexif()) == 0, fmt
        assert "exif" not in result.info and "xmp" not in result.info


def _icc_swapping_red_and_green() -> bytes:
    """A matrix/TRC RGB profile whose red and green primaries are sRGB's green and red.

    A pure red pixel tagged with it *is* sRGB green: a converter that honours the
    profile outputs green; one that drops the profile outputs red.
    """
    def s15(v):
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z):
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    desc_text = b"swapped primaries\0"
    tags = {
        b"desc": b"desc" + b"\0" * 4 + struct.pack(">I", len(desc_text)) + desc_text + b"\0" * 12 + b"\0" * 67,
        b"wtpt": xyz(0.9642, 1.0, 0.8249),
        b"rXYZ": xyz(0.3851, 0.7169, 0.0971),  # sRGB's green
        b"gXYZ": xyz(0.4361, 0.2225, 0.0139),  # sRGB's red
        b"bXYZ": xyz(0.1431, 0.0606, 0.7141),
    }
    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2
    for name in (b"rTRC", b"gTRC", b"bTRC"):
        tags[name] = curve
    table, body = b"", b""
    offset = 128 + 4 + 12 * len(tags)
    for name, data in tags.items():
        table += name + struct.pack(">II", offset + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + b"\0" * 4 + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_an_embedded_icc_profile_is_applied_not_dropped(fmt):
    icc = _icc_swapping_red_and_green()
    ImageCms.ImageCmsProfile(io.BytesIO(icc))  # a valid profile
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(buf, "PNG", icc_profile=icc)
    result = decode(run(buf.getvalue(), width=16, format=fmt)[0]).convert("RGB")
    r, g, b = result.getpixel((8, 8))
    assert g > 200 and r < 60, f"profile ignored: got {(r, g, b)}"
    assert "icc_profile" not in result.info  # converted to sRGB, so none is needed


def test_corpus_icc_png_is_converted_and_keeps_alpha():
    result = decode(run((GOOD_DIR / "icc_profile.png").read_bytes(), format="png")[0])
    assert result.mode == "RGBA" and "icc_profile" not in result.info


def test_cmyk_jpeg_becomes_correct_rgb():
    source = Image.open(io.BytesIO((GOOD_DIR / "pil_sample_cmyk.jpg").read_bytes()))
    reference = source.convert("RGB").resize((50, 50), Image.Resampling.BICUBIC)
    result = decode(run((GOOD_DIR / "pil_sample_cmyk.jpg").read_bytes(), width=50, format="png")[0])
    assert result.mode == "RGB"
    assert mean_diff(result, reference) < 6


@pytest.mark.parametrize("cmyk, rgb", [((0, 0, 0, 0), (255, 255, 255)), ((255, 0, 0, 0), (0, 255, 255)),
                                       ((0, 0, 0, 255), (0, 0, 0))])
def test_adobe_inverted_cmyk_jpeg(cmyk, rgb):
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), cmyk).save(buf, "JPEG", quality=100)  # libjpeg writes an Adobe APP14 marker
    assert Image.open(io.BytesIO(buf.getvalue())).info.get("adobe") is not None
    result = decode(run(buf.getvalue(), format="png")[0])
    assert all(abs(a - b) < 12 for a, b in zip(result.getpixel((50, 50)), rgb))


def test_16_bit_greyscale_is_scaled_not_clipped():
    buf = io.BytesIO()
    Image.new("I;16", (20, 20), 32768).save(buf, "PNG")
    result = decode(run(buf.getvalue(), format="png")[0])
    value = result.getpixel((50, 50))
    assert 120 <= (value if isinstance(value, int) else value[0]) <= 136


def test_16_bit_rgb_tiff():
    result = decode(run((GOOD_DIR / "tiff_16bit_RGB.tiff").read_bytes(), width=50)[0])
    assert result.size == (50, 20) and result.mode == "RGB"


def test_palette_and_greyscale():
    assert decode(run((GOOD_DIR / "palette_sepia.png").read_bytes(), width=30)[0]).size == (30, 30)
    grey = decode(run((GOOD_DIR / "hopper_gray.jpg").read_bytes(), width=30)[0])
    assert grey.mode in ("L", "RGB") and grey.size == (30, 30)


# -- alpha --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["png", "webp", "avif"])
def test_alpha_is_kept_where_the_format_has_it(fmt):
    result = decode(run((GOOD_DIR / "transparent.png").read_bytes(), width=100, format=fmt)[0])
    assert result.mode == "RGBA"
    assert result.getextrema()[3][0] < 10  # still has transparent pixels


@pytest.mark.parametrize("background, expected", [("#ffffff", (255, 255, 255)), ("#ff0000", (255, 0, 0))])
def test_alpha_is_flattened_onto_the_background_for_jpeg(background, expected):
    buf = io.BytesIO()
    image = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (10, 10, 30, 30))
    image.save(buf, "PNG")
    result = decode(run(buf.getvalue(), width=40, format="jpeg", background=background)[0])
    corner = result.getpixel((1, 1))
    assert all(abs(a - b) < 10 for a, b in zip(corner, expected)), corner  # never black
    centre = result.getpixel((20, 20))
    assert centre[2] > 200 and centre[0] < 50


def test_palette_transparency_survives_to_png():
    buf = io.BytesIO()
    image = Image.new("P", (20, 20), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (5, 5, 15, 15))
    image.save(buf, "GIF", transparency=0)
    result = decode(run(buf.getvalue(), format="auto", width=20)[0])
    assert result.format == "PNG" and result.mode == "RGBA" and result.getpixel((0, 0))[3] == 0


def test_pad_uses_the_background():
    (out,) = run(image_bytes((100, 50), color=(0, 0, 0)), width=100, height=100, fit="pad", background="#00ff00",
                 format="png")
    result = decode(out)
    assert result.size == (100, 100)
    assert result.getpixel((50, 5))[:3] == (0, 255, 0) and result.getpixel((50, 50))[:3] == (0, 0, 0)


def test_heic_input():
    import pillow_heif  # noqa: F401  (registers the HEIF writer used to make the test file)

    buf = io.BytesIO()
    Image.new("RGB", (160, 120), (20, 160, 40)).save(buf, "HEIF", quality=90)
    assert buf.getvalue()[4:12] == b"ftypheic"
    result = decode(run(buf.getvalue(), width=80, format="png")[0])
    assert result.size == (80, 60)
    r, g, b = result.convert("RGB").getpixel((40, 30))
    assert g > 130 and r < 60 and b < 70


def test_animated_webp_input_stays_animated():
    frames = [Image.new("RGB", (60, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=[100, 200, 300], loop=0,
                   lossless=True)
    result = decode(run(buf.getvalue(), width=30, format="auto")[0])
    assert result.format == "WEBP" and result.n_frames == 3 and result.size == (30, 20)
    assert _timings(result) == [100, 200, 300]


# -- animation -----------------------------------------------------------------------------------
def _timings(image: Image.Image) -> list[int]:
    durations = []
    for i in range(image.n_frames):
        image.seek(i)
        image.load()  # the WebP reader fills in the frame's duration on load
        durations.append(image.info.get("duration"))
    return durations


def test_animated_gif_stays_animated_with_timing_and_loop():
    data = (GOOD_DIR / "iss634.gif").read_bytes()
    source = Image.open(io.BytesIO(data))
    (out,) = run(data, width=100, format="auto")
    result = decode(out)
    assert result.format == "GIF" and result.n_frames == source.n_frames
    assert result.size == (100, 100)
    assert _timings(result) == _timings(Image.open(io.BytesIO(data)))
    assert result.info.get("loop") == source.info.get("loop")


def test_animated_gif_to_webp_is_animated():
    data = (GOOD_DIR / "iss634.gif").read_bytes()
    result = decode(run(data, width=60, format="webp")[0])
    assert result.format == "WEBP" and getattr(result, "is_animated", False)
    total_in = sum(_timings(Image.open(io.BytesIO(data))))
    assert abs(sum(_timings(result)) - total_in) <= result.n_frames  # identical frames may merge, time is kept


def test_animated_gif_to_jpeg_is_the_first_frame():
    data = (GOOD_DIR / "iss634.gif").read_bytes()
    result = decode(run(data, width=60, format="jpeg")[0])
    first = Image.open(io.BytesIO(data)).convert("RGB").resize((60, 60), Image.Resampling.BICUBIC)
    assert result.size == (60, 60) and mean_diff(result, first) < 10


def test_frame_limit_protects_the_worker():
    data = (GOOD_DIR / "iss634.gif").read_bytes()
    with pytest.raises(ImageTooLarge, match="42 frames"):
        run(data, ImageLimits(max_frames=10), width=60, format="gif" if False else "webp")


# -- geometry on real pixels ---------------------------------------------------------------------
@pytest.mark.parametrize("fit", ["fill", "contain", "cover", "pad"])
@pytest.mark.parametrize("size", [(1, 300), (300, 1), (1, 1), (97, 13)])
def test_exact_output_sizes(fit, size):
    data = image_bytes(size, fmt="PNG")
    (out,) = run(data, width=50, height=40, fit=fit, enlarge=True, format="png")
    result = decode(out)
    assert result.size == (out.width, out.height)
    if fit != "contain":
        assert result.size == (50, 40)
    assert min(result.size) >= 1


def test_variants_come_from_one_upload():
    outs = run(image_bytes((400, 300)), variants=[{"name": "s", "width": 40}, {"name": "m", "width": 200,
                                                                                   "format": "webp"}])
    assert [(o.name, o.width, o.height, o.format.name) for o in outs] == [("s", 40, 30, "jpeg"), ("m", 200, 150, "webp")]


# -- quality: the fast path must not degrade the picture ---------------------------------------------
@pytest.mark.parametrize("width", [300, 600, 1000, 1400])  # decoded at 1/8, 1/4, 3/8 and 1/2
def test_downscale_quality_matches_a_reference_resample(width):
    """Shrink-on-load + bicubic against full decode + Lanczos: PSNR must stay above 40 dB.

    40 dB is where differences stop being visible (JPEG at quality 85 itself
    costs about that much); a nearest-neighbour shortcut on the same image
    scores far below, as the second assertion shows.
    """
    data = photo_jpeg(3000, 2000)
    (out,) = run(data, width=width, format="png")
    ours = decode(out)
    full = Image.open(io.BytesIO(data))
    reference = full.resize(ours.size, Image.Resampling.LANCZOS)
    assert psnr(ours, reference) > 40
    assert psnr(full.resize(ours.size, Image.Resampling.NEAREST), reference) < 40


@pytest.mark.parametrize("source, width, decoded", [
    ((3000, 2000), 300, (375, 250)),     # 1/8
    ((3000, 2000), 600, (750, 500)),     # 1/4
    ((3000, 2000), 1000, (1125, 750)),   # 3/8: between 1/4 (too small) and 1/2
    ((4001, 2999), 1024, (1501, 1125)),  # 3/8, sides that do not divide: libjpeg rounds up
    ((3000, 2000), 1400, (1500, 1000)),  # 1/2
    ((3000, 2000), 1600, (3000, 2000)),  # over 1/2: full decode
])
def test_shrink_on_load_decodes_the_smallest_scale_that_keeps_the_detail(source, width, decoded):
    data = photo_jpeg(*source)
    image = shrink.shrink_on_load(Image.open(io.BytesIO(data)), width / source[0])
    image.load()
    assert image.size == decoded and decoded[0] >= width
    # the decoder really produced that size: the pixels line up with a full decode scaled down
    reference = Image.open(io.BytesIO(data)).resize(decoded, Image.Resampling.LANCZOS)
    assert psnr(image, reference) > 35


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
@pytest.mark.parametrize("box", [(0.0, 0.0, 1500.0, 1125.0), (100.5, 37.25, 1400.0, 1100.0)])
def test_banded_resize_matches_one_pass(mode, box):
    """Resizing a band of rows at a time (to skip Pillow's big intermediate) gives the same picture."""
    source = Image.open(io.BytesIO(photo_jpeg(1500, 1125))).convert(mode)
    size = (1024, 700)
    assert steps._worth_banding(source, size, box)
    whole = source.resize(size, Image.Resampling.BICUBIC, box=box)
    banded = steps._resize_in_bands(source, size, box)
    assert banded.mode == whole.mode and banded.size == whole.size
    extrema = ImageChops.difference(banded, whole).getextrema()
    bands = [extrema] if mode == "L" else extrema  # one (min, max) pair per band of the image
    assert max(hi for _, hi in bands) <= 2  # float rounding only
    assert psnr(banded.convert("RGB"), whole.convert("RGB")) > 50


# -- broken input --------------------------------------------------------------------------------------
EXPECTED_BAD = {
    "broken.png": CorruptImage,
    "crash-0c7e0e8e11ce787078f00b5b0ca409a167f070e0.tif": CorruptImage,
    "crash-465703f71a0f0094873a3e0e82c9f798161171b8.sgi": UnsupportedImageFormat,
    "decompression_bomb.gif": ImageTooLarge,
    "empty.jpg": MissingImage,
    "oom-225817ca0f8c663be7ab4b9e717b02c661e66834.tif": CorruptImage,
    "text.png": UnsupportedImageFormat,
    "timeout-060745d3f534ad6e4128c51d336ea5489182c69d.blp": UnsupportedImageFormat,
    "truncated_image.png": CorruptImage,
    "truncated_jpeg.jpg": CorruptImage,
    "zero_width.gif": CorruptImage,
}


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_corpus_fails_with_a_specific_error(path):
    with pytest.raises(EXPECTED_BAD[path.name]):
        run(path.read_bytes())


def test_pixel_limit_is_checked_from_the_header():
    data = image_bytes((200, 200), fmt="PNG")
    with pytest.raises(ImageTooLarge, match=r"200x200 \(40,000 pixels\); the limit is 10,000"):
        open_image(data, max_pixels=10_000)


# -- animation and orientation: frames go through the same steps as a still image ----------------------------
def _animation_with_orientation(fmt: str, orientation: int) -> bytes:
    """Three 60x40 upright frames, stored as a camera would for ``orientation``.

    A red marker covers the top left, half the width and a quarter of the
    height: not the frame's aspect ratio, so a squeezed frame shows too.
    """
    frames = []
    for shade in (40, 120, 200):
        upright = Image.new("RGB", (60, 40), (0, shade, 255 - shade))
        upright.paste((255, 0, 0), (0, 0, 30, 10))
        for op in _STORED[orientation]:
            upright = upright.transpose(op)
        frames.append(upright)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, exif=exif.tobytes(),
                   **extra)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["WEBP", "PNG"])  # animated WebP and APNG carry EXIF; GIF has no EXIF block
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_frame_of_an_animation_is_oriented(fmt, orientation):
    data = _animation_with_orientation(fmt, orientation)
    opened, info = open_image(data, 10**6)
    assert info.animated and info.orientation == orientation  # the test file says what it should
    (out,) = run(data, width=30, format="webp")
    result = decode(out)
    assert result.n_frames == 3 and result.size == (30, 20), "planned from the upright size, frames must match"
    for index in range(3):
        result.seek(index)
        frame = result.convert("RGB")
        for inside in ((2, 2), (12, 2)):  # the marker is 15x5 here
            red = frame.getpixel(inside)
            assert red[0] > 180 and red[1] < 80 and red[2] < 80, f"frame {index}: no marker at {inside}"
        for outside in ((2, 8), (26, 2), (2, 16), (26, 16)):
            assert frame.getpixel(outside)[0] < 100, f"frame {index}: red at {outside}"


# -- the 3/8 decode is checked once, and its failure costs speed, not correctness --------------------------
@pytest.fixture
def fresh_check():
    shrink.three_eighths_works.cache_clear()
    yield
    shrink.three_eighths_works.cache_clear()


def test_the_three_eighths_decode_passes_its_check_here(fresh_check):
    assert shrink.three_eighths_works()


def _wrong_scale(image):
    """What a Pillow that read decoderconfig differently could do: the 3/8 size, decoded at 1/2."""
    assert _real_three_eighths(image)
    image.decoderconfig = (2, 0)
    return True


def _internals_gone(image):
    raise AttributeError("module 'PIL.ImageFile' has no attribute '_Tile'")


_real_three_eighths = shrink._decode_at_three_eighths


@pytest.mark.parametrize("broken", [_wrong_scale, _internals_gone])
def test_a_failed_three_eighths_check_falls_back_to_draft(broken, fresh_check, monkeypatch, caplog):
    monkeypatch.setattr(shrink, "_decode_at_three_eighths", broken)
    assert not shrink.three_eighths_works()
    assert "falling back to draft()" in caplog.text
    data = photo_jpeg(3000, 2000)
    image = shrink.shrink_on_load(Image.open(io.BytesIO(data)), 1000 / 3000)  # would be 3/8
    image.load()
    assert image.size == (1500, 1000)  # draft()'s 1/2 instead
    reference = Image.open(io.BytesIO(data)).resize(image.size, Image.Resampling.LANCZOS)
    assert psnr(image, reference) > 35
    (out,) = run(data, width=1000, format="png")
    assert psnr(decode(out), Image.open(io.BytesIO(data)).resize((1000, 667), Image.Resampling.LANCZOS)) > 40
