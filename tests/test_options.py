import pytest

from resizer.errors import InvalidParameter
from resizer.imaging.spec import WatermarkSpec
from resizer.options import JobSpec, Limits, parse_options

LIMITS = Limits(max_output_dimension=8192, max_variants=10)


def test_no_options_is_the_original_100x100_stretched_jpeg():
    (out,) = parse_options({}, LIMITS).outputs
    assert (out.width, out.height, out.fit, out.enlarge, out.format) == (100, 100, "fill", True, "jpeg")
    assert out.background == (255, 255, 255) and out.gravity == "center"


def test_a_size_switches_the_defaults_to_contain_without_enlarging():
    (out,) = parse_options({"width": 300}, LIMITS).outputs
    assert (out.width, out.height, out.fit, out.enlarge) == (300, None, "contain", False)


def test_strings_from_forms_and_query_strings_are_coerced():
    (out,) = parse_options({"width": "30", "height": "20", "enlarge": "true", "quality": "70"}, LIMITS).outputs
    assert (out.width, out.height, out.enlarge, out.quality) == (30, 20, True, 70)


def test_variants_inherit_top_level_options():
    spec = parse_options(
        {"format": "webp", "background": "#102030", "fit": "cover",
         "variants": [{"name": "a", "width": 10}, {"name": "b", "width": 20, "format": "png", "fit": "pad"}]},
        LIMITS,
    )
    a, b = spec.outputs
    assert (a.name, a.format, a.fit, a.background) == ("a", "webp", "cover", (16, 32, 48))
    assert (b.name, b.format, b.fit) == ("b", "png", "pad")


def test_variants_may_come_as_a_json_string():
    spec = parse_options({"variants": '[{"name": "x", "height": 5}]'}, LIMITS)
    assert spec.outputs[0].height == 5


def test_job_spec_round_trips_through_a_dict():
    spec = parse_options({"variants": [{"name": "x", "width": 5}, {"name": "y"}], "background": "#ff0000"}, LIMITS)
    assert JobSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"width": 0}, "width"),
        ({"width": 8193}, "width"),
        ({"height": -5}, "height"),
        ({"width": 1.5}, "width"),
        ({"width": "wide"}, "width"),
        ({"fit": "stretch"}, "fit"),
        ({"format": "bmp"}, "format"),
        ({"gravity": "up"}, "gravity"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"background": "red"}, "background"),
        ({"background": "#12345"}, "background"),
        ({"enlarge": "maybe"}, "enlarge"),
        ({"colour": "#ffffff"}, "colour"),
        ({"variants": []}, "variants"),
        ({"variants": "not json"}, "variants"),
        ({"variants": [{"name": "Bad Name"}]}, "variants.0.name"),
        ({"variants": [{"width": 10}]}, "variants.0.name"),
        ({"variants": [{"name": "a", "fit": "x"}]}, "variants.0.fit"),
        ({"variants": [{"name": "a", "background": "#000000"}]}, "variants.0.background"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "repeated: a"),
        ({"variants": [{"name": f"v{i}"} for i in range(11)]}, "variants"),
    ],
)
def test_invalid_options_name_the_field(raw, field):
    with pytest.raises(InvalidParameter) as err:
        parse_options(raw, LIMITS)
    assert field in err.value.message
    assert err.value.status == 422 and err.value.code == "invalid_parameter"


def test_limits_are_configurable():
    with pytest.raises(InvalidParameter, match="width"):
        parse_options({"width": 101}, Limits(max_output_dimension=100, max_variants=2))
    with pytest.raises(InvalidParameter, match="variants"):
        parse_options({"variants": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, Limits(100, 2))


def test_each_option_list_has_one_source():
    """The request models (hence the OpenAPI document) and the CLI take their choices from the kernel's lists."""
    from resizer.cli import build_parser
    from resizer.imaging import spec as kernel
    from resizer.openapi import build

    props = build(LIMITS)["components"]["schemas"]["ResizeOptions"]["properties"]
    submit = build_parser()._subparsers._group_actions[0].choices["submit"]
    cli = {a.dest: a.choices for a in submit._actions}
    for field, values in (("fit", kernel.FITS), ("gravity", kernel.GRAVITIES), ("format", kernel.FORMATS)):
        enum = next(a["enum"] for a in props[field]["anyOf"] if "enum" in a)
        assert tuple(enum) == values, field
        assert tuple(cli[field]) == values, field


# -- watermark (v1.1) ---------------------------------------------------------------------------------
def test_a_watermark_gets_its_defaults_and_variants_inherit_or_replace_it():
    spec = parse_options({"watermark": {"image": "logo"},
                          "variants": [{"name": "a"}, {"name": "b", "watermark": {"image": "other", "gravity": "north",
                                                                                  "opacity": 1, "scale": 0.2,
                                                                                  "margin": 16}}]}, LIMITS)
    a, b = spec.outputs
    assert a.watermark == WatermarkSpec("logo", "south_east", 0.5, None, 0)
    assert b.watermark == WatermarkSpec("other", "north", 1.0, 0.2, 16)
    assert spec.watermark_names() == {"logo", "other"}
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_a_watermark_may_come_as_json_text_from_a_form_or_query():
    spec = parse_options({"watermark": '{"image": "logo", "opacity": "0.25"}'}, LIMITS)
    assert spec.outputs[0].watermark.opacity == 0.25


def test_no_watermark_by_default_and_old_queued_specs_still_load():
    spec = parse_options({}, LIMITS)
    assert spec.outputs[0].watermark is None and spec.watermark_names() == set()
    old = spec.to_dict()
    del old["outputs"][0]["watermark"]  # a job queued by the previous release
    assert JobSpec.from_dict(old) == spec


@pytest.mark.parametrize("mark, field", [
    ({"opacity": 0.5}, "watermark.image"),
    ({"image": "Bad Name"}, "watermark.image"),
    ({"image": "a", "gravity": "smart"}, "watermark.gravity"),
    ({"image": "a", "opacity": 1.5}, "watermark.opacity"),
    ({"image": "a", "opacity": -0.1}, "watermark.opacity"),
    ({"image": "a", "scale": 0}, "watermark.scale"),
    ({"image": "a", "scale": 1.5}, "watermark.scale"),
    ({"image": "a", "margin": -1}, "watermark.margin"),
    ({"image": "a", "colour": "red"}, "watermark.colour"),
    ("not json", "watermark"),
])
def test_invalid_watermarks_name_the_field(mark, field):
    with pytest.raises(InvalidParameter) as err:
        parse_options({"watermark": mark}, LIMITS)
    assert field in err.value.message


def test_smart_gravity_is_accepted_for_the_job_and_variants():
    spec = parse_options({"gravity": "smart", "fit": "cover", "width": 10, "height": 10,
                          "variants": [{"name": "a"}, {"name": "b", "gravity": "smart", "fit": "pad"}]}, LIMITS)
    assert [o.gravity for o in spec.outputs] == ["smart", "smart"]
