"""The shipped inventory holds Ho Chi Minh City's 168 commune-level units as Resolution
1685/NQ-UBTVQH15 (National Assembly Standing Committee, 16 June 2025) sets them.

Expected values come from the resolution and reports of it, not from inventory.yml: the
counts from its closing figure (168 units: 113 wards, 54 communes, 1 special zone); the
names and former districts from the text of Article 1's clauses as thuvienphapluat.vn quotes
them (the clause number is given with each).
"""

from __future__ import annotations

import unicodedata
from collections import Counter

import pytest

from lab import REPO
from wardready.core.inventory import Inventory, Ward, load_inventory

KIND_WORD = {"ward": "Phường ", "commune": "Xã ", "special-zone": "Đặc khu "}
"""Each kind's word, as the resolution writes it before a unit's name."""


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return load_inventory(REPO / "inventory.yml")


def test_the_city_has_168_units_of_the_three_kinds(inventory: Inventory) -> None:
    # "113 phường, 54 xã và 1 đặc khu": the resolution's figure after the arrangement.
    assert len(inventory.wards) == 168
    assert Counter(w.kind for w in inventory.wards) == {
        "ward": 113, "commune": 54, "special-zone": 1}


def test_units_per_former_province(inventory: Inventory) -> None:
    # The former city's 102 units (the June 2025 trials ran in all "102 wards and communes",
    # seed 002), and the 36 and 30 units formed from the two provinces folded in.
    assert Counter(w.former_province for w in inventory.wards) == {
        "Thành phố Hồ Chí Minh": 102, "Tỉnh Bình Dương": 36, "Tỉnh Bà Rịa - Vũng Tàu": 30}


def test_ids_and_names_are_unique(inventory: Inventory) -> None:
    for field in ("id", "name"):
        repeated = [v for v, n in Counter(getattr(w, field) for w in inventory.wards).items()
                    if n > 1]
        assert repeated == [], field


@pytest.mark.parametrize("field", ["name", "former_district", "former_province"])
def test_names_are_nfc_vietnamese_with_their_kind_word(inventory: Inventory,
                                                        field: str) -> None:
    for ward in inventory.wards:
        text = getattr(ward, field)
        assert unicodedata.normalize("NFC", text) == text, (ward.id, field)
        if field == "name":
            assert text.startswith(KIND_WORD[ward.kind]), ward.id
            assert len(text) > len(KIND_WORD[ward.kind]), ward.id


def by_name(inventory: Inventory) -> dict[str, Ward]:
    return {w.name: w for w in inventory.wards}


# (clause of Article 1, the new unit's name, its former district) as the clause has them:
# "... phường Bến Nghé và một phần ... phường Đa Kao, phường Nguyễn Thái Bình thành phường mới
# có tên gọi là phường Sài Gòn" (clause 1; these three wards were District 1's), "... Phường 4
# (Quận 3) thành phường mới có tên gọi là phường Bàn Cờ" (clause 5), and so on.
CLAUSES = [
    (1, "Phường Sài Gòn", "Quận 1"),
    (2, "Phường Tân Định", "Quận 1"),
    (3, "Phường Bến Thành", "Quận 1"),
    (4, "Phường Cầu Ông Lãnh", "Quận 1"),
    (5, "Phường Bàn Cờ", "Quận 3"),
    (28, "Phường Minh Phụng", "Quận 11"),
    (30, "Phường Hòa Bình", "Quận 11"),
    (32, "Phường Đông Hưng Thuận", "Quận 12"),
    (76, "Phường Bình Trưng", "Thành phố Thủ Đức"),   # "phường An Phú (thành phố Thủ Đức)"
    (111, "Phường Phú Mỹ", "Thành phố Phú Mỹ"),       # "phường Phú Mỹ (thành phố Phú Mỹ)"
    (115, "Xã Bình Lợi", None),
    (118, "Xã Hưng Long", None),
    (148, "Xã Châu Pha", None),
]


@pytest.mark.parametrize(("clause", "name", "district"), CLAUSES,
                         ids=[f"clause-{c}" for c, _, _ in CLAUSES])
def test_units_named_as_the_resolution_names_them(inventory: Inventory, clause: int,
                                                  name: str, district: str | None) -> None:
    ward = by_name(inventory).get(name)
    assert ward is not None, f"clause {clause}: {name} missing"
    if district is not None:
        assert ward.former_district == district


def test_clause_116_spans_three_former_districts_and_names_the_first_listed(
        inventory: Inventory) -> None:
    # "... thị trấn Tân Túc, xã Tân Nhựt, phần còn lại của phường Tân Tạo A, xã Tân Kiên ...
    # và phần còn lại của Phường 16 (Quận 8) ... thành xã mới có tên gọi là xã Tân Nhựt":
    # Tân Túc and Tân Nhựt were Bình Chánh district's.
    ward = by_name(inventory)["Xã Tân Nhựt"]
    assert (ward.kind, ward.former_district) == ("commune", "Huyện Bình Chánh")


def test_the_special_zone_is_con_dao_with_its_own_profile(inventory: Inventory) -> None:
    (zone,) = [w for w in inventory.wards if w.kind == "special-zone"]
    assert (zone.id, zone.name, zone.former_district, zone.former_province) == (
        "con-dao", "Đặc khu Côn Đảo", "Huyện Côn Đảo", "Tỉnh Bà Rịa - Vũng Tàu")
    island = inventory.profile_of(zone)
    assert island.example
    # A longer path over the sea than a commune's, but not a geostationary hop (>= 477 ms).
    commune = inventory.profiles["commune-standard"]
    assert commune.link.max_rtt_ms < island.link.max_rtt_ms < 477


def test_todays_ids_kept_for_tests_and_examples(inventory: Inventory) -> None:
    names = {w.id: w.name for w in inventory.wards}
    assert names["sai-gon"] == "Phường Sài Gòn"
    assert names["nha-be"] == "Xã Nhà Bè"
    assert names["thanh-an"] == "Xã Thạnh An"  # Cần Giờ's; Dầu Tiếng's is thanh-an-dau-tieng
    assert [d.name for d in inventory.ward("sai-gon").devices] == ["edge-router", "core-switch"]


def test_every_unit_is_in_a_working_group_and_the_trial_groups_keep_theirs(
        inventory: Inventory) -> None:
    groups = Counter(w.working_group for w in inventory.wards)
    # Seed 002 names 102 units in ten groups; the provinces folded in wait in placeholders.
    assert sum(n for g, n in groups.items() if g.startswith("wg-0") or g == "wg-10") == 102
    assert groups["wg-binh-duong"] == 36 and groups["wg-ba-ria-vung-tau"] == 30
    assert inventory.ward("binh-thoi").working_group == "wg-01"  # "Working Group No. 1 ...
    assert inventory.ward("an-khanh").working_group == "wg-10"   # ... No. 10 ... An Khanh Ward"
