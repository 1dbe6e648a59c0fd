"""Notification duties (45 CFR 164.404-408) at their edges: a pure function of the
discovery date and the unsecured patients' states."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from projections.investigations import affected, duties


def _to(found: list[dict[str, Any]]) -> dict[object, dict[str, Any]]:
    return {d["to"]: d for d in found}


def test_no_unsecured_patient_no_duty() -> None:
    assert duties(date(2026, 5, 1), []) == []


def test_all_encrypted_disclosures_secure_every_patient_so_no_duty() -> None:
    rows = [{"seq": i, "action": "disclose", "outcome": "success", "patient_ref": f"p{i}",
             "source_system": "x", "resource_phi": None, "channel": channel,
             "occurred_utc": "2026-01-01T00:00:00.000000Z", "occurred_at": "2026-01-01T00:00Z"}
            for i, channel in enumerate(("fax", "secure_sms", "encrypted_email"))]
    found = affected(rows, {0: True, 1: None, 2: False})
    assert [a.secured for a in found] == [True, True, True]
    assert duties(date(2026, 5, 1), [None for a in found if not a.secured]) == []
    # the same fax unencrypted is unsecured
    assert not affected(rows[:1], {0: False})[0].secured


def test_discovery_on_31_december_rolls_into_the_next_year() -> None:
    found = _to(duties(date(2026, 12, 31), ["NY"]))
    assert found["individuals"]["deadline"] == "2027-03-01"
    assert found["hhs"]["deadline"] == "2027-03-01"  # 60 days after 2026-12-31


def test_a_discovery_late_in_9999_answers_with_the_calendars_last_day() -> None:
    """discovered_at is any valid instant; adding 60 days to 9999-11-15 overflowed and
    the investigation answered 500."""
    found = _to(duties(date(9999, 11, 15), ["NY"]))
    assert found["individuals"]["deadline"] == found["hhs"]["deadline"] == "9999-12-31"
    assert _to(duties(date(9999, 10, 1), ["NY"]))["individuals"]["deadline"] == "9999-11-30"


def test_leap_years() -> None:
    # 60 days after 2027-12-31 is 2028-02-29 (2028 is a leap year)
    assert _to(duties(date(2027, 12, 31), ["NY"]))["hhs"]["deadline"] == "2028-02-29"
    # discovery 2028-01-15 + 60 days crosses 29 February
    assert _to(duties(date(2028, 1, 15), ["NY"]))["individuals"]["deadline"] == "2028-03-15"
    assert _to(duties(date(2027, 1, 15), ["NY"]))["individuals"]["deadline"] == "2027-03-16"


@pytest.mark.parametrize(("unsecured", "hhs_now"), [(499, False), (500, True), (501, True)])
def test_hhs_at_once_from_500(unsecured: int, hhs_now: bool) -> None:
    states = [f"S{i % 26:02d}"[:2] for i in range(unsecured)]
    found = _to(duties(date(2026, 6, 10), states))
    assert found["individuals"]["deadline"] == "2026-08-09"
    expected = "2026-08-09" if hhs_now else "2027-03-01"
    assert found["hhs"]["deadline"] == expected
    assert ("164.408(b)" in found["hhs"]["basis"]) is hhs_now


@pytest.mark.parametrize(("residents", "media"), [(500, False), (501, True)])
def test_media_for_more_than_500_residents_of_one_state(residents: int, media: bool) -> None:
    states: list[str | None] = ["TX"] * residents + ["NM"] * 600 + [None] * 700
    found = _to(duties(date(2026, 6, 10), states))
    if media:
        assert found["media"]["states"] == ["NM", "TX"]
        assert found["media"]["deadline"] == "2026-08-09"
    else:
        assert found["media"]["states"] == ["NM"]  # unknown states never count
