"""The data-set registry: defect masks per source, deterministic per-source splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from defectcam.data.sources import (
    DEFECT_SOURCES,
    ImagePair,
    list_pairs,
    load_defect_mask,
    mask_for_defect,
    other_source_pairs,
    pairs_for_defect,
    shared_data_root,
    split_source,
)


def fake_pairs(source: str, n: int) -> list[ImagePair]:
    root = Path("/x") / source
    return [ImagePair(root / f"images/{i:04d}.jpg", root / f"masks/{i:04d}.png", source,
                      f"{source}/images/{i:04d}.jpg") for i in range(n)]


def test_registry():
    assert DEFECT_SOURCES == {"crack": ("deepcrack", "crackforest", "phinet"),
                              "spalling": ("phinet",), "rust": ("corrosion",)}


def test_mask_for_defect_values():
    phinet = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(mask_for_defect(phinet, "phinet", "crack"), phinet == 1)
    np.testing.assert_array_equal(mask_for_defect(phinet, "phinet", "spalling"), phinet == 2)
    corrosion = np.array([[0, 1, 2, 3]], dtype=np.uint8)
    np.testing.assert_array_equal(mask_for_defect(corrosion, "corrosion", "rust"),
                                  [[False, True, True, True]])
    deepcrack = np.array([[0, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(mask_for_defect(deepcrack, "deepcrack", "crack"), [[False, True]])
    with pytest.raises(ValueError, match="holds"):
        mask_for_defect(deepcrack, "deepcrack", "rust")
    with pytest.raises(ValueError, match="unknown source"):
        mask_for_defect(deepcrack, "nope", "crack")


def test_root_override(monkeypatch, tmp_path):
    monkeypatch.setenv("DEFECTCAM_SHARED_DATA", str(tmp_path))
    assert shared_data_root() == tmp_path
    assert shared_data_root("/elsewhere") == Path("/elsewhere")
    with pytest.raises(FileNotFoundError, match="DEFECTCAM_SHARED_DATA"):
        list_pairs("deepcrack")


def test_split_deterministic_disjoint_per_source():
    pairs = fake_pairs("phinet", 50) + fake_pairs("deepcrack", 21)
    train, val = split_source(pairs, val_fraction=0.2, seed=0)
    names = lambda ps: [p.name for p in ps]  # noqa: E731
    assert not set(names(train)) & set(names(val))
    assert sorted(names(train) + names(val)) == sorted(names(pairs))
    assert sum(p.source == "phinet" for p in val) == 10
    assert sum(p.source == "deepcrack" for p in val) == 4
    # input order does not matter; the same seed gives the same split
    train2, val2 = split_source(list(reversed(pairs)), val_fraction=0.2, seed=0)
    assert names(val2) == names(val) and names(train2) == names(train)
    # a source's split does not depend on other sources in the list
    _, val_alone = split_source(fake_pairs("phinet", 50), 0.2, seed=0)
    assert names(val_alone) == [n for n in names(val) if n.startswith("phinet")]
    _, val_other = split_source(pairs, 0.2, seed=1)
    assert names(val_other) != names(val)
    # pinned: the split must not change across machines or library versions
    assert names(split_source(fake_pairs("phinet", 10), 0.3, seed=0)[1]) == PINNED


PINNED = [f"phinet/images/{i:04d}.jpg" for i in (0, 5, 9)]


def test_real_sources(shared_data):
    phinet = list_pairs("phinet", shared_data)
    assert len(phinet) > 100 and all(p.mask.stem == p.image.stem for p in phinet)
    assert [p.stem for p in phinet] == sorted(p.stem for p in phinet)
    crack = pairs_for_defect("crack", shared_data)
    assert {p.source for p in crack} == {"deepcrack", "crackforest", "phinet"}
    # phinet: crack and spalling share one image split
    _, crack_val = split_source(crack, seed=0)
    _, spall_val = split_source(pairs_for_defect("spalling", shared_data), seed=0)
    assert {p.stem for p in crack_val if p.source == "phinet"} == {p.stem for p in spall_val}


def test_other_defects_photos_are_negatives_only(shared_data, tmp_path):
    """Every classifier runs on every frame in CVAT: the other defects' photos give negative
    clicks (training) and count false positives (evaluation), from their own split."""
    from defectcam.cli import main as cli_main
    from defectcam.data.cvat_xml import read_cvat_xml
    from defectcam.evaluation.run import folder_items, load_item

    others = other_source_pairs("rust", shared_data)
    assert {p.source for p in others} == {"deepcrack", "crackforest", "phinet"}
    assert not load_defect_mask(others[0], "rust").any()  # rust is absent there
    out = tmp_path / "clicks.xml"
    assert cli_main(["simulate", "--defect", "crack", "--data-root", str(shared_data),
                     "--max-images-per-source", "3", "--other-sources", "4",
                     "--out", str(out)]) == 0
    images = read_cvat_xml(out).images
    corrosion = [im for im in images if im.name.startswith("rust/corrosion/")]
    assert len(corrosion) == 4 and len(images) == 3 * 3 + 4
    assert all(s.label == "no-defect" for im in corrosion for s in im.shapes)
    assert sum(len(im.shapes) for im in corrosion) > 0
    train, val = split_source(list_pairs("corrosion", shared_data), seed=0)
    assert {im.name for im in corrosion} <= {p.name for p in train}  # never a val photo

    items = folder_items(["spalling"], "val", shared_data, limit=2, other_sources=1)
    assert [i.source for i in items] == ["phinet", "phinet", "corrosion", "crackforest",
                                         "deepcrack"]
    assert {i.image_id for i in items[2:]} <= {p.name for p in val} | {
        p.name for s in ("crackforest", "deepcrack")
        for p in split_source(list_pairs(s, shared_data), seed=0)[1]}
    assert not load_item(items[-1]).truth.any()
