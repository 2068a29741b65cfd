"""Patient-level k-fold splits and their manifest."""

import json

import pytest

from softseg.experiments.folds import (
    FoldManifest,
    make_folds,
    patient_map,
    prepare_folds,
    read_manifest,
    write_manifest,
)
from softseg.errors import SoftsegError

CASES = [f"p{p}_img{i}" for p in range(7) for i in range(1 + p % 3)]  # 7 patients, 1-3 images each


def test_default_patient_is_the_case_id():
    patients, grouping = patient_map(["a", "b"])
    assert patients == {"a": "a", "b": "b"}
    assert grouping == "case id"


def test_regex_groups_images_of_one_patient():
    patients, grouping = patient_map(CASES, group_regex=r"^(p\d+)_")
    assert patients["p2_img0"] == patients["p2_img2"] == "p2"
    assert grouping == r"regex ^(p\d+)_"
    # without a group the whole match is the patient
    patients, _ = patient_map(["x1-a", "x1-b"], group_regex=r"x\d")
    assert set(patients.values()) == {"x1"}


def test_folds_are_patient_level_partition_and_balanced():
    patients, _ = patient_map(CASES, group_regex=r"^(p\d+)_")
    folds = make_folds(patients, 3, seed=0)
    assert len(folds) == 3
    flat = [c for f in folds for c in f]
    assert sorted(flat) == sorted(CASES)  # every case held out exactly once
    for fold in folds:
        others = {patients[c] for f in folds if f is not fold for c in f}
        assert not {patients[c] for c in fold} & others  # no patient straddles folds
        assert list(fold) == [c for c in CASES if c in fold]  # dataset order kept
    # 13 cases, largest-first greedy placement: sizes differ by at most the largest group (3)
    sizes = sorted(len(f) for f in folds)
    assert sum(sizes) == 13 and sizes[-1] - sizes[0] <= 3


def test_folds_are_deterministic_and_depend_on_seed():
    patients = {f"c{i:02d}": f"c{i:02d}" for i in range(20)}
    assert make_folds(patients, 5, seed=3) == make_folds(patients, 5, seed=3)
    assert make_folds(patients, 5, seed=3) != make_folds(patients, 5, seed=4)
    assert all(len(f) == 4 for f in make_folds(patients, 5, seed=3))


def test_too_many_or_too_few_folds_are_refused():
    patients, _ = patient_map(CASES, group_regex=r"^(p\d+)_")
    with pytest.raises(SoftsegError, match=r"--folds 8: only 7 patient\(s\) in 13 case\(s\); use at most 7"):
        make_folds(patients, 8)
    with pytest.raises(SoftsegError, match="--folds 1: expected at least 2"):
        make_folds(patients, 1)


def test_regex_errors_name_the_cases():
    with pytest.raises(SoftsegError, match=r"matches no patient id in 1 case id\(s\): other"):
        patient_map(["p1_a", "other"], group_regex=r"^(p\d+)_")
    with pytest.raises(SoftsegError, match="not a valid regular expression"):
        patient_map(["a"], group_regex="(")


def test_csv_mapping(tmp_path):
    path = tmp_path / "patients.csv"
    path.write_text("case,patient\na,P1\nb,P1\nc,P2\nunused,P9\n")
    patients, grouping = patient_map(["a", "b", "c"], mapping_csv=path)
    assert patients == {"a": "P1", "b": "P1", "c": "P2"}
    assert grouping.startswith("csv ")
    folds = make_folds(patients, 2, seed=0)
    assert {frozenset(f) for f in folds} == {frozenset({"a", "b"}), frozenset({"c"})}


def test_csv_mapping_errors(tmp_path):
    path = tmp_path / "patients.csv"
    with pytest.raises(SoftsegError, match="patient mapping CSV not found"):
        patient_map(["a"], mapping_csv=path)
    path.write_text("image,subject\na,P1\n")
    with pytest.raises(SoftsegError, match=r"expected a header with columns 'case' .* found \['image', 'subject'\]"):
        patient_map(["a"], mapping_csv=path)
    path.write_text("case_id,patient\na,P1\na,P2\n")
    with pytest.raises(SoftsegError, match=r"line 3: case a mapped to 'P1' and 'P2'.*no patient for 1 case\(s\): b"):
        patient_map(["a", "b"], mapping_csv=path)
    with pytest.raises(SoftsegError, match="choose one way"):
        patient_map(["a"], group_regex="a", mapping_csv=path)


def test_manifest_round_trip_and_resume(tmp_path):
    patients, grouping = patient_map(CASES, group_regex=r"^(p\d+)_")
    path = tmp_path / "folds.json"
    manifest = prepare_folds(path, patients, 3, 7, grouping)
    saved = json.loads(path.read_text())
    assert saved["k"] == 3 and saved["seed"] == 7 and saved["grouping"] == grouping
    for entry in saved["folds"]:
        assert sorted(entry["train"] + entry["test"]) == sorted(CASES)
    assert read_manifest(path) == manifest
    assert manifest.train_ids(0) == tuple(c for c in CASES if c not in manifest.test_ids(0))
    # a rerun keeps the saved split even with another seed (the run is being resumed)
    assert prepare_folds(path, patients, 3, 99, grouping).folds == manifest.folds
    with pytest.raises(SoftsegError, match=r"saved folds \(k=3, 13 cases\) do not match this run \(k=4"):
        prepare_folds(path, patients, 4, 7, grouping)


def test_corrupt_manifests_are_refused(tmp_path):
    path = tmp_path / "folds.json"
    path.write_text("{not json")
    with pytest.raises(SoftsegError, match="not a readable fold manifest"):
        read_manifest(path)
    straddling = FoldManifest(2, 0, "csv", {"a": "P", "b": "P"}, (("a",), ("b",)))
    write_manifest(path, straddling)
    with pytest.raises(SoftsegError, match="patient P straddles folds 0 and 1"):
        read_manifest(path)
    twice = FoldManifest(2, 0, "case id", {"a": "a", "b": "b"}, (("a",), ("a",)))
    write_manifest(path, twice)
    with pytest.raises(SoftsegError, match=r"case a held out in folds 0 and 1.*case\(s\) in no fold: b"):
        read_manifest(path)
