"""Where each lesion type may lie: the fit on a split's lesions, the model config,
`place` and `detect` honouring the table, and writing it into a saved model."""

from __future__ import annotations

import json

import pytest
import torch

from vipet.errors import InputError
from vipet.inference.places import fit_places, fit_places_model, places_table, write_places
from vipet.model.config import ViPetConfig
from vipet.model.diag_head import FINE_NAMES, OUTPUTS, DenseFindings
from vipet.model.findings_slots import detect, place
from vipet.reports.schema import FINE_LOCATIONS, LATERALITIES, LESION_TYPES, REGIONS

NODE, NODULE = LESION_TYPES.index("lymph_node"), LESION_TYPES.index("nodule")


def _les(kind: str, fine: str | None, region: str | None = "chest") -> dict:
    return {"type": kind, "location_detail": fine, "region": region}


def test_fit_places_lists_each_types_locations_per_region_in_table_order() -> None:
    fit = fit_places(
        {
            "a": [
                _les("nodule", "liver"),
                _les("nodule", "lung_upper"),
                _les("effusion", "pleura"),
            ],
            "b": [_les("nodule", "liver"), _les("lymph_node", "hilar"), _les("nodule", None)],
            "c": None,  # a study without a lesion list
            "d": [_les("cyst", "liver"), _les("nodule", "kidney"), _les("nodule", "liver", None)],
            "e": [_les("lymph_node", "iliac", "abdomen_pelvis")],
        }
    )
    # regions in REGIONS order, types in LESION_TYPES order, places in FINE_NAMES order
    assert fit.places == {
        "chest": {
            "lymph_node": ["hilar"],
            "nodule": ["lung_upper", "liver"],
            "effusion": ["pleura"],
        },
        "abdomen_pelvis": {"lymph_node": ["iliac"]},
    }
    assert list(fit.places) == ["chest", "abdomen_pelvis"]
    assert fit.counts["chest"]["nodule"] == {"lung_upper": 1, "liver": 2}
    assert (fit.studies, fit.lesions) == (5, 6)
    assert "| chest | nodule | 3 | lung_upper (1), liver (2) |" in places_table(fit)


def test_config_place_table_and_its_errors() -> None:
    cfg = ViPetConfig(slot_places={"chest": {"nodule": ["liver", "lung_lower"]}})
    table = cfg.place_table()
    assert len(table) == len(REGIONS) and len(table[0]) == len(LESION_TYPES)
    assert len(table[0][0]) == len(FINE_NAMES)
    chest = table[REGIONS.index("chest")]
    assert [FINE_NAMES[i] for i, ok in enumerate(chest[NODULE]) if ok] == ["lung_lower", "liver"]
    assert all(chest[NODE])  # a type not named may lie anywhere
    assert all(table[REGIONS.index("head_neck")][NODULE])  # and so may a region's
    assert ViPetConfig().place_table() is None
    with pytest.raises(ValueError, match="'thorax' is not a region"):
        ViPetConfig(slot_places={"thorax": {"nodule": ["liver"]}})
    with pytest.raises(ValueError, match="is not a region with a table"):
        ViPetConfig(slot_places={"chest": ["liver"]})
    with pytest.raises(ValueError, match=r"'nodules'.*unknown lesion type"):
        ViPetConfig(slot_places={"chest": {"nodules": ["liver"]}})
    with pytest.raises(ValueError, match=r"unknown locations \['kidney'\]"):
        ViPetConfig(slot_places={"chest": {"nodule": ["liver", "kidney"]}})
    with pytest.raises(ValueError, match="non-empty list"):
        ViPetConfig(slot_places={"chest": {"nodule": "liver"}})


def _table(places: dict) -> torch.Tensor:
    return torch.tensor(ViPetConfig(slot_places=places).place_table())


def test_place_takes_the_likeliest_location_its_type_may_take() -> None:
    probs = torch.zeros(len(FINE_NAMES))
    probs[FINE_NAMES.index("pleura")] = 0.6
    probs[FINE_NAMES.index("liver")] = 0.3
    probs[FINE_NAMES.index("lung_lower")] = 0.1
    right, none = LATERALITIES.index("right"), LATERALITIES.index("none")
    assert place(NODULE, probs, right) == (FINE_NAMES.index("pleura"), right)
    table = _table({"chest": {"nodule": ["lung_lower", "liver"]}})[REGIONS.index("chest")]
    # the liver has no side: "none", whatever the side map says
    assert place(NODULE, probs, right, table) == (FINE_NAMES.index("liver"), none)
    # a type the table leaves open keeps the head's own place
    assert place(NODE, probs, right, table)[0] == FINE_NAMES.index("pleura")
    # a place with sides keeps the side read
    only_lung = _table({"chest": {"nodule": ["lung_lower"]}})[REGIONS.index("chest")]
    assert place(NODULE, probs, right, only_lung) == (FINE_NAMES.index("lung_lower"), right)


def test_detect_places_each_detection_among_its_types_locations() -> None:
    """A node the fine map puts in the upper lobe (its second choice: hilar) is placed
    at the hilum; the type, score and everything else stay the head's."""
    shape = (1, 4, 8, 8)
    maps = {k: torch.full((1, n, *shape[1:]) if n > 1 else shape, -8.0) for k, n in OUTPUTS.items()}
    maps["heat"][0, 1, 2, 2] = 2.0
    maps["avid"][:] = 8.0
    near = (0, slice(0, 3), slice(1, 4), slice(1, 4))
    maps["types"][(near[0], NODE, *near[1:])] = 8.0
    maps["fine"][(near[0], FINE_NAMES.index("lung_upper"), *near[1:])] = 4.0
    maps["fine"][(near[0], FINE_NAMES.index("hilar"), *near[1:])] = 3.0
    maps["side"][(near[0], LATERALITIES.index("left"), *near[1:])] = 4.0
    dense = DenseFindings(**maps)
    pet = torch.zeros(1, 4, 16, 16)
    (own,) = detect(dense, pet, (1, 2, 2), 4, 0.3).attributes[0]
    assert (own["type"], own["location_detail"], own["laterality"]) == (
        "lymph_node",
        "lung_upper",
        "left",
    )
    table = _table({"chest": {"lymph_node": ["hilar", "cervical"]}})
    chest, head = [REGIONS.index("chest")], [REGIONS.index("head_neck")]
    (placed,) = detect(dense, pet, (1, 2, 2), 4, 0.3, regions=chest, places=table).attributes[0]
    assert (placed["location_detail"], placed["location"], placed["laterality"]) == (
        "hilar",
        FINE_LOCATIONS["hilar"].location,
        "left",
    )
    assert {k: v for k, v in placed.items() if "location" not in k} == {
        k: v for k, v in own.items() if "location" not in k
    }
    # the same peak in the head-neck volume, where the table names no place for nodes
    (there,) = detect(dense, pet, (1, 2, 2), 4, 0.3, regions=head, places=table).attributes[0]
    assert there == own
    with pytest.raises(ValueError, match="places must be"):
        detect(dense, pet, (1, 2, 2), 4, 0.3, regions=chest, places=table[0])
    with pytest.raises(ValueError, match="places are per region"):
        detect(dense, pet, (1, 2, 2), 4, 0.3, places=table)


def test_write_places_and_fit_places_model(tmp_path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vipet"}))
    write_places(tmp_path, {"chest": {"nodule": ["liver"]}})
    assert json.loads((tmp_path / "config.json").read_text())["slot_places"] == {
        "chest": {"nodule": ["liver"]}
    }
    with pytest.raises(InputError, match=r"no config\.json"):
        write_places(tmp_path / "none", {})
    data = tmp_path / "data"
    (data / "ground_truth").mkdir(parents=True)
    (data / "dataset.json").write_text(
        json.dumps({"studies": [], "splits": {"train": ["s0"], "val": ["s1"]}})
    )
    for sid, lesions in (("s0", [_les("effusion", "pleura")]), ("s1", [])):
        (data / "ground_truth" / f"{sid}.json").write_text(
            json.dumps({"id": sid, "lesions": lesions})
        )
    fit = fit_places_model(tmp_path, data)
    assert fit.places == {"chest": {"effusion": ["pleura"]}}
    assert json.loads((tmp_path / "config.json").read_text())["slot_places"] == fit.places
    with pytest.raises(InputError, match="no lesion of the val split"):
        fit_places_model(tmp_path, data, "val")
