"""CVAT for images 1.1 XML: reading CVAT's own output, writing it back, RLE, clicks."""

from __future__ import annotations

import numpy as np
import pytest

from defectcam.core.cvat import (
    cvat_rle_to_mask,
    encode_sdk_mask,
    mask_runs,
    mask_to_cvat_rle,
    runs_to_mask,
)
from defectcam.data.cvat_xml import (
    CvatAnnotations,
    CvatImage,
    CvatShape,
    clicks_from_annotations,
    defect_labels,
    read_cvat_xml,
    write_cvat_xml,
)

# Written the way CVAT's exporter writes a task (XMLGenerator, 2-space indent, shapes as
# open/close pairs, attributes in CVAT's order). "delamination" is not a declared label.
CVAT_EXPORT = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>17</id>
      <name>bridge inspection batch 3</name>
      <size>4</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2024-05-02 09:13:44.171524+00:00</created>
      <updated>2024-05-03 16:40:02.004125+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>3</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment>
          <id>21</id>
          <start>0</start>
          <stop>3</stop>
          <url>http://localhost:8080/api/jobs/21</url>
        </segment>
      </segments>
      <owner>
        <username>admin</username>
        <email>admin@example.com</email>
      </owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>crack</name>
          <color>#fa3253</color>
          <type>points</type>
          <attributes>
            <attribute>
              <name>width</name>
              <mutable>False</mutable>
              <input_type>select</input_type>
              <default_value>hairline</default_value>
              <values>hairline
wide</values>
            </attribute>
          </attributes>
        </label>
        <label>
          <name>spalling</name>
          <color>#33ddff</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>rust</name>
          <color>#ff6a4d</color>
          <type>any</type>
          <attributes>
          </attributes>
        </label>
        <label>
          <name>no-defect</name>
          <color>#83e070</color>
          <type>points</type>
          <attributes>
          </attributes>
        </label>
      </labels>
    </task>
    <dumped>2024-05-03 16:41:10.552093+00:00</dumped>
  </meta>
  <image id="0" name="pier_01.jpg" width="640" height="480">
    <points label="crack" source="manual" occluded="0" points="120.50,33.25;400.00,410.75" z_order="0">
      <attribute name="width">wide</attribute>
    </points>
    <points label="no-defect" source="manual" occluded="0" points="600.00,20.00" z_order="0">
    </points>
    <points label="delamination" source="manual" occluded="0" points="10.00,10.00" z_order="0">
    </points>
    <polygon label="spalling" source="auto" occluded="0" points="200.00,200.00;260.00,200.00;260.00,250.00;200.00,250.00" z_order="1">
    </polygon>
  </image>
  <image id="1" name="sub/pier_02.jpg" width="320" height="240">
  </image>
  <image id="2" name="girder_07.jpg" width="100" height="80">
    <mask label="rust" source="semi-auto" occluded="0" rle="3, 2, 4, 1, 2" left="10" top="20" width="4" height="3" z_order="0">
    </mask>
    <box label="spalling" source="manual" occluded="1" xtl="5.00" ytl="6.00" xbr="25.00" ybr="46.00" z_order="0" group_id="2">
    </box>
    <tag label="rust" source="manual">
    </tag>
  </image>
  <image id="3" name="girder_08.jpg" width="100" height="80">
    <points label="rust" source="manual" occluded="0" points="50.00,40.00" z_order="0">
    </points>
  </image>
</annotations>
"""  # noqa: E501  (CVAT writes each shape on one line)


@pytest.fixture()
def export(tmp_path):
    path = tmp_path / "annotations.xml"
    path.write_text(CVAT_EXPORT, encoding="utf-8")
    return path


def test_reads_cvat_export(export):
    with pytest.warns(UserWarning, match=r"ignored 1 shapes: 1 x unknown label 'delamination'"):
        ann = read_cvat_xml(export)
    assert ann.label_names == ("crack", "spalling", "rust", "no-defect")
    assert [lab.type for lab in ann.labels] == ["points", "any", "any", "points"]
    assert ann.meta["name"] == "bridge inspection batch 3" and ann.meta["id"] == "17"
    assert ann.ignored["unknown label 'delamination'"] == 1
    assert [(i.id, i.name, i.width, i.height) for i in ann.images] == [
        (0, "pier_01.jpg", 640, 480), (1, "sub/pier_02.jpg", 320, 240),
        (2, "girder_07.jpg", 100, 80), (3, "girder_08.jpg", 100, 80)]

    first = ann.images[0].shapes
    assert [s.kind for s in first] == ["points", "points", "polygon"]
    np.testing.assert_allclose(first[0].points, [[120.5, 33.25], [400.0, 410.75]])
    assert first[0].attributes == {"width": "wide"} and first[0].source == "manual"
    assert first[2].source == "auto" and first[2].z_order == 1 and first[2].points.shape == (4, 2)
    assert ann.images[1].shapes == []

    mask, box, tag = ann.images[2].shapes
    assert mask.kind == "mask" and mask.source == "semi-auto" and mask.box == (10, 20, 13, 22)
    expected = np.array([[0, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(mask.mask, expected)
    assert box.kind == "box" and box.occluded and box.group_id == 2
    np.testing.assert_allclose(box.points, [[5, 6], [25, 46]])
    assert tag.kind == "tag" and tag.points.shape == (0, 2)


def test_clicks_from_export(export):
    with pytest.warns(UserWarning):
        ann = read_cvat_xml(export)
    crack = clicks_from_annotations(ann, "crack")
    assert [c.name for c in crack] == ["pier_01.jpg"]  # image 1 has no shapes: left out
    np.testing.assert_allclose(crack[0].positives, [[120.5, 33.25], [400.0, 410.75]])
    np.testing.assert_allclose(crack[0].negatives, [[600.0, 20.0]])

    spalling = clicks_from_annotations(ann, "spalling")
    assert [c.name for c in spalling] == ["pier_01.jpg", "girder_07.jpg"]
    # the polygon 200..260 x 200..250 gives one click deep inside it; the box its centre
    (px, py), = spalling[0].positives
    assert 215 <= px <= 245 and 210 <= py <= 240
    np.testing.assert_allclose(spalling[1].positives, [[15.0, 26.0]])
    only_points = clicks_from_annotations(ann, "spalling", include_shapes=False)
    assert [len(c.positives) for c in only_points] == [0]

    rust = {c.name: c for c in clicks_from_annotations(ann, "rust")}
    (mx, my), = rust["girder_07.jpg"].positives  # from the mask: on one of its pixels
    assert mask_pixel(ann.images[2].shapes[0], mx, my)
    np.testing.assert_allclose(rust["girder_08.jpg"].positives, [[50.0, 40.0]])
    manual = clicks_from_annotations(ann, "rust", sources=("manual",))
    # the semi-auto mask is filtered out; pier_01 stays for its negative click
    assert [(c.name, len(c.positives), len(c.negatives)) for c in manual] == [
        ("pier_01.jpg", 0, 1), ("girder_08.jpg", 1, 0)]


def mask_pixel(shape: CvatShape, x: float, y: float) -> bool:
    return bool(shape.mask[int(y) - shape.box[1], int(x) - shape.box[0]])


@pytest.mark.parametrize(
    ("points", "message"),
    [("1.0,2.0;3.0", "malformed point '3.0'"), ("a,b", "malformed point 'a,b'"), ("", "no points")],
)
def test_malformed_points_name_image_and_shape(tmp_path, points, message):
    text = CVAT_EXPORT.replace('points="50.00,40.00"', f'points="{points}"')
    path = tmp_path / "bad.xml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_cvat_xml(path)
    assert "image 'girder_08.jpg' (id 3), shape #0 <points label='rust'>" in str(err.value)
    assert message in str(err.value)


def test_bad_rle_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text(CVAT_EXPORT.replace('rle="3, 2, 4, 1, 2"', 'rle="3, 2, 4"'), "utf-8")
    with pytest.raises(ValueError, match="girder_07.jpg.*RLE covers 9"):
        read_cvat_xml(path)


def test_every_run_length_codec_round_trips_and_matches_cvat_sdk():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (3, 4), (17, 9), (40, 33)]:
        for density in (0.0, 0.3, 1.0):
            mask = rng.random(shape) < density
            rle = mask_to_cvat_rle(mask)
            assert sum(rle) == mask.size and all(v >= 0 for v in rle)
            assert (rle[0] == 0) == bool(mask.flat[0])  # counts start with background
            np.testing.assert_array_equal(cvat_rle_to_mask(rle, shape[1], shape[0]), mask)
            # the interaction log's BLOB holds the same runs
            np.testing.assert_array_equal(runs_to_mask(mask_runs(mask), shape[1], shape[0]), mask)
    masks = pytest.importorskip("cvat_sdk.masks")
    full = np.zeros((30, 40), dtype=bool)
    full[5:12, 7:20] = rng.random((7, 13)) < 0.5
    full[5, 7] = True
    encoded = masks.encode_mask(full, bbox=[7, 5, 20, 12])
    assert encoded[:-4] == mask_to_cvat_rle(full[5:12, 7:20])
    assert encoded[-4:] == [7, 5, 19, 11]
    assert encode_sdk_mask(full[5:12, 7:20], (7, 5, 19, 11)) == encoded


def test_writer_round_trip_and_looks_like_cvat(export, tmp_path):
    with pytest.warns(UserWarning):
        ann = read_cvat_xml(export)
    out = write_cvat_xml(ann, tmp_path / "out.xml")
    text = out.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n'
                           "  <version>1.1</version>\n  <meta>\n    <task>\n      <id>17</id>")
    assert text.endswith("  </image>\n</annotations>\n")
    # shape lines exactly as CVAT writes them, attribute order included
    for line in [
        '    <points label="crack" source="manual" occluded="0" '
        'points="120.50,33.25;400.00,410.75" z_order="0">\n'
        '      <attribute name="width">wide</attribute>\n    </points>',
        '    <mask label="rust" source="semi-auto" occluded="0" rle="3, 2, 4, 1, 2" left="10" '
        'top="20" width="4" height="3" z_order="0">\n    </mask>',
        '    <box label="spalling" source="manual" occluded="1" xtl="5.00" ytl="6.00" '
        'xbr="25.00" ybr="46.00" z_order="0" group_id="2">\n    </box>',
        '    <tag label="rust" source="manual">\n    </tag>',
        '  <image id="1" name="sub/pier_02.jpg" width="320" height="240">\n  </image>',
    ]:
        assert line in text
    again = read_cvat_xml(out)  # no warning: the unknown label was not written back
    assert again.label_names == ann.label_names and again.meta["name"] == ann.meta["name"]
    assert len(again.images) == len(ann.images)
    for a, b in zip(ann.images, again.images, strict=True):
        assert (a.id, a.name, a.width, a.height) == (b.id, b.name, b.width, b.height)
        assert [s.kind for s in a.shapes] == [s.kind for s in b.shapes]
        for sa, sb in zip(a.shapes, b.shapes, strict=True):
            assert (sa.label, sa.source, sa.occluded, sa.z_order, sa.group_id, sa.attributes) == (
                sb.label, sb.source, sb.occluded, sb.z_order, sb.group_id, sb.attributes)
            np.testing.assert_allclose(sa.points, sb.points)
            if sa.kind == "mask":
                np.testing.assert_array_equal(sa.mask, sb.mask)
                assert sa.box == sb.box


def test_written_clicks_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.round(rng.uniform(0, 300, (7, 2)), 2)
    mask = rng.random((6, 9)) < 0.5
    images = [
        CvatImage(0, "a.jpg", 300, 300, [
            CvatShape("points", "crack", pts[:3]),
            CvatShape("points", "no-defect", pts[3:]),
            CvatShape("mask", "rust", mask=mask, box=(4, 5, 12, 10), source="auto"),
        ]),
        CvatImage(1, "b.jpg", 64, 48),
    ]
    path = write_cvat_xml(CvatAnnotations(defect_labels(), images), tmp_path / "clicks.xml")
    ann = read_cvat_xml(path)
    assert ann.label_names == ("crack", "spalling", "rust", "no-defect")
    (clicks,) = clicks_from_annotations(ann, "crack")
    np.testing.assert_allclose(clicks.positives, pts[:3])
    np.testing.assert_allclose(clicks.negatives, pts[3:])
    np.testing.assert_array_equal(ann.images[0].shapes[2].mask, mask)
    assert ann.images[0].shapes[2].box == (4, 5, 12, 10)
    assert ann.images[1].shapes == []
