"""The fit rules, as examples and as properties over random sizes and options."""

from hypothesis import given, settings
from hypothesis import strategies as st

from resizer.imaging.geometry import move_crop, place, plan
from resizer.imaging.spec import FITS, GRAVITIES, OutputSpec

MAX = 8192


def spec(width=None, height=None, fit="contain", enlarge=False, gravity="center"):
    return OutputSpec("o", width, height, fit, gravity, enlarge, "jpeg", None, (255, 255, 255))


def test_fill_stretches_to_the_exact_box():
    assert plan((400, 300), spec(100, 100, "fill", True), MAX).canvas == (100, 100)


def test_contain_keeps_the_aspect_ratio_inside_the_box():
    assert plan((400, 300), spec(100, 100, "contain"), MAX).canvas == (100, 75)


def test_one_side_given_the_other_follows_the_aspect_ratio():
    assert plan((400, 300), spec(width=200), MAX).canvas == (200, 150)
    assert plan((400, 300), spec(height=30), MAX).canvas == (40, 30)
    # the side asked for is exact even when the other one rounds (731.43 -> 731 must not pull 1024 to 1023)
    assert plan((7000, 5000), spec(width=1024), MAX).canvas == (1024, 731)
    assert plan((5000, 7000), spec(height=1024), MAX).canvas == (731, 1024)


def test_no_enlarging_unless_asked():
    assert plan((40, 30), spec(400, 300), MAX).canvas == (40, 30)
    assert plan((40, 30), spec(400, 300, enlarge=True), MAX).canvas == (400, 300)


def test_cover_crops_by_gravity():
    p = plan((400, 200), spec(100, 100, "cover"), MAX)
    assert p.canvas == (100, 100) and p.crop == (100.0, 0.0, 300.0, 200.0)
    assert plan((400, 200), spec(100, 100, "cover", gravity="west"), MAX).crop[0] == 0
    assert plan((400, 200), spec(100, 100, "cover", gravity="east"), MAX).crop[2] == 400


def test_pad_places_the_content_on_the_exact_box():
    p = plan((400, 200), spec(100, 100, "pad"), MAX)
    assert (p.content, p.canvas, p.offset) == ((100, 50), (100, 100), (0, 25))
    p = plan((400, 200), spec(100, 100, "pad", gravity="south"), MAX)
    assert p.offset == (0, 50)


def test_extreme_aspect_ratios_never_give_a_zero_side():
    assert plan((1, 10000), spec(width=100, height=100), MAX).canvas == (1, 100)
    assert plan((10000, 1), spec(width=50, enlarge=True), MAX).canvas == (50, 1)
    assert plan((1, 10000), spec(width=MAX, enlarge=True), MAX).canvas == (1, MAX)


sizes = st.integers(min_value=1, max_value=20000)
dims = st.one_of(st.none(), st.integers(min_value=1, max_value=MAX))


@settings(max_examples=600, deadline=None)
@given(sizes, sizes, dims, dims, st.sampled_from(FITS), st.booleans(), st.sampled_from(GRAVITIES))
def test_geometry_properties(src_w, src_h, width, height, fit, enlarge, gravity):
    if width is None and height is None:
        width = height = 100
    p = plan((src_w, src_h), spec(width, height, fit, enlarge, gravity), MAX)
    cw, ch = p.canvas
    # never a 0 side, never past the limit
    assert 1 <= cw <= MAX and 1 <= ch <= MAX
    assert 1 <= p.content[0] <= cw and 1 <= p.content[1] <= ch
    # the crop is inside the source
    x0, y0, x1, y1 = p.crop
    assert -1e-6 <= x0 < x1 <= src_w + 1e-6 and -1e-6 <= y0 < y1 <= src_h + 1e-6
    # pad content sits inside the canvas
    assert 0 <= p.offset[0] <= cw - p.content[0] and 0 <= p.offset[1] <= ch - p.content[1]
    if width is not None and height is not None:
        if fit in ("fill", "cover", "pad") and enlarge:
            assert p.canvas == (width, height)
        if fit == "pad":
            assert p.canvas == (width, height)
        assert cw <= width or fit == "pad" and cw == width
        assert ch <= height
        if fit == "contain" or fit == "pad":
            # aspect kept: one scale factor explains both sides, up to rounding (and the 1-pixel floor)
            cx, cy = p.content
            lo_x, hi_x = (0 if cx == 1 else (cx - 0.5) / src_w), (cx + 0.5) / src_w
            lo_y, hi_y = (0 if cy == 1 else (cy - 0.5) / src_h), (cy + 0.5) / src_h
            assert max(lo_x, lo_y) <= min(hi_x, hi_y) + 1e-9
    if not enlarge and fit != "pad":
        assert cw <= max(src_w, 1) and ch <= max(src_h, 1)
    # one side given: that side is exact (within the size limit, and the source when not enlarging)
    if (width is None) != (height is None) and fit != "fill":
        asked, got, src, other = (width, cw, src_w, src_h) if width is not None else (height, ch, src_h, src_w)
        if fit == "pad":  # the canvas is the box; the content is not enlarged inside it
            if asked * other / src <= MAX:
                assert got == asked
        elif not enlarge and asked >= src:
            if max(src_w, src_h) <= MAX:
                assert (cw, ch) == (src_w, src_h)
        elif asked * other / src <= MAX:  # the free side fits: no shrink to the limit
            assert got == asked


# -- placing (pad, watermarks) and moving a crop (smart) --------------------------------------------------
def test_place_puts_a_box_by_gravity_margin_pixels_in():
    assert place((20, 10), (200, 100), "south_east", 5) == (175, 85)
    assert place((20, 10), (200, 100), "north_west", 5) == (5, 5)
    assert place((20, 10), (200, 100), "center") == (90, 45)
    assert place((20, 10), (200, 100), "smart") == (90, 45)  # smart places like the centre


@given(sizes, sizes, st.integers(min_value=1, max_value=2000), st.floats(-1e5, 1e5), st.floats(-1e5, 1e5))
@settings(max_examples=300)
def test_a_moved_crop_keeps_its_size_and_stays_inside_the_source(src_w, src_h, box, x0, y0):
    p = plan((src_w, src_h), spec(box, box, "cover", True, "smart"), MAX)
    moved = move_crop(p, x0, y0)
    (a0, b0, a1, b1), (c0, d0, c1, d1) = p.crop, moved.crop
    assert abs((c1 - c0) - (a1 - a0)) < 1e-6 and abs((d1 - d0) - (b1 - b0)) < 1e-6
    assert -1e-6 <= c0 and c1 <= src_w + 1e-6 and -1e-6 <= d0 and d1 <= src_h + 1e-6
    assert moved.content == p.content and moved.canvas == p.canvas
