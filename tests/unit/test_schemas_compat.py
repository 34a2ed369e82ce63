"""`parity schemas check` and `diff` on the committed schemas and on bad versions built in a temp folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from parity.errors import SchemaError
from schemas import avro, compat, subjects
from schemas.cli import main
from schemas.diff import diff

V2 = json.loads(avro.latest("ad_event").text)


def _root(tmp_path: Path, v3: dict | None = None) -> Path:
    """A copy of schemas/ad_event (v1, v2), plus an optional v3, mapped to a test subject."""
    root = tmp_path / "schemas"
    shutil.copytree(avro.SCHEMA_ROOT / "ad_event", root / "ad_event")
    (root / "subjects.toml").write_text('[ad_event]\nsubjects = ["unit-test-value"]\n')
    if v3 is not None:
        (root / "ad_event" / "v3.avsc").write_text(json.dumps(v3, indent=2))
    return root


def _v3(change) -> dict:
    schema = json.loads(json.dumps(V2))
    change(schema)
    return schema


def _field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


def retype_cost(s: dict) -> None:
    _field(s, "cost")["type"] = "string"


def add_required_region(s: dict) -> None:
    s["fields"].append({"name": "region", "type": "string"})


def drop_click_symbol(s: dict) -> None:
    _field(s, "event_type")["type"]["symbols"] = ["impression"]


def remove_country(s: dict) -> None:
    s["fields"] = [f for f in s["fields"] if f["name"] != "country"]


def test_committed_schemas_pass(capsys):
    assert main(["check", "--offline"]) == 0
    assert "ok:" in capsys.readouterr().out


def test_every_committed_folder_is_mapped_and_v2_adds_an_optional_field():
    mapped = {(folder.name, folder.subjects) for folder in subjects.load()}
    assert mapped == {
        ("ad_event", ("ad-events-value",)),
        ("served_features", ("parity.served-features-value",)),
    }
    v1, v2 = avro.versions("ad_event")[:2]
    assert compat.check_pair(v2, v1) == []
    device = _field(V2, "device")
    assert device["default"] is None and device["type"][0] == "null"


@pytest.mark.parametrize(
    ("change", "field", "rule"),
    [
        (retype_cost, "cost", "type_mismatch"),
        (add_required_region, "region", "reader_field_missing_default_value"),
        (drop_click_symbol, "event_type", "missing_enum_symbols"),
    ],
)
def test_incompatible_v3_fails_naming_field_and_rule(tmp_path, capsys, change, field, rule):
    root = _root(tmp_path, _v3(change))
    assert main(["check", "--offline", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"v3.avsc cannot read v1: field {field!r} breaks {rule}" in out
    assert f"v3.avsc cannot read v2: field {field!r} breaks {rule}" in out

    assert main(["check", "--offline", "--json", "--root", str(root)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["level"] == "BACKWARD_TRANSITIVE"
    assert {(v["version"], v["against"], v["field"], v["rule"]) for v in report["violations"]} == {
        (3, 1, field, rule),
        (3, 2, field, rule),
    }


def test_removing_a_field_is_backward_compatible(tmp_path):
    # Confluent BACKWARD lets a new reader drop a field: it simply ignores it in old data.
    assert main(["check", "--offline", "--root", str(_root(tmp_path, _v3(remove_country)))]) == 0


def test_check_is_transitive(tmp_path):
    # v3 reads v2 (device now has a default) but not v1, which has no 'region'.
    def region_like_device(s: dict) -> None:
        s["fields"].append({"name": "region", "type": "string"})

    root = _root(tmp_path, _v3(region_like_device))
    versions = avro.versions("ad_event", root)
    against = {v.against for v in compat.check_versions(versions)}
    assert against == {1, 2}


def test_diff_v1_v2_names_the_added_field(capsys):
    v1, v2 = avro.versions("ad_event")[:2]
    (change,) = diff(v1, v2)
    assert (change.kind, change.field) == ("added", "device")
    assert main(["diff", "ad-events-value", "v1", "2", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["changes"][0]["kind"] == "added"


def test_diff_reports_removed_retyped_and_redefaulted(tmp_path, capsys):
    def several(s: dict) -> None:
        remove_country(s)
        retype_cost(s)
        _field(s, "device")["default"] = None
        _field(s, "ad_id")["default"] = "unknown"

    root = _root(tmp_path, _v3(several))
    changes = {(c.kind, c.field) for c in diff(*avro.versions("ad_event", root)[1:])}
    assert changes == {("removed", "country"), ("type_changed", "cost"), ("default_changed", "ad_id")}
    assert main(["diff", "ad_event", "2", "3", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "- country" in out and "~ cost: type" in out and '~ ad_id: default (none) -> "unknown"' in out


def test_unmapped_folder_is_refused(tmp_path):
    root = _root(tmp_path)
    shutil.copytree(root / "ad_event", root / "other_event")
    with pytest.raises(SchemaError, match=r"schemas/other_event/ .*subjects.toml does not map it"):
        subjects.load(root)


def test_unknown_version_in_diff_exits_1(capsys):
    assert main(["diff", "ad_event", "1", "9"]) == 1
    assert "no version '9'" in capsys.readouterr().err
