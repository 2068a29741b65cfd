"""config: defaults are the paper's, presets, file + command-line overrides, validation."""

import json

import pytest

from softseg.model.config import (
    task_name,
    PRESETS,
    TrainConfig,
    from_dict,
    load_config,
    preset,
    resolve_config,
    save_config,
    to_dict,
    validate,
)
from softseg.errors import SoftsegError
from softseg.experiments.paper import QUBIQ_TASKS


def test_defaults_are_the_papers_procedure():
    c = TrainConfig()
    assert (c.encoder, c.decoder_channels) == ("efficientnet-b0", (256, 128, 64, 32, 16))
    assert (c.epochs, c.batch_size, c.aug_copies) == (150, 8, 3)
    assert (c.lr, c.lr_min, c.betas, c.weight_decay) == (1e-2, 1e-4, (0.9, 0.999), 0.0)
    assert (c.translate, c.rotate, c.zoom, c.hflip, c.vflip) == (0.1, 15.0, 0.1, 0.5, 0.5)
    assert c.label_mode == "soft" and c.normalization == "zscore" and c.bn_momentum == 0.1


def test_the_default_loss_is_ce_dml_and_the_papers_tasks_keep_ce(tmp_path):
    from softseg.experiments.paper import QUBIQ_TASKS
    from softseg.experiments.reproduce import ReproduceOptions, _reproduce_config

    assert TrainConfig().loss == "ce+dml" and resolve_config(None).loss == "ce+dml"
    assert {preset(t.key).loss for t in QUBIQ_TASKS} == {"ce"}
    assert preset("pancreas").loss == "ce+dml"  # the paper did not train the 3D tasks
    assert resolve_config("kidney", None, {"loss": "dml"}).loss == "dml"  # the command line wins
    # reproduce trains the paper's setting whatever a config file says
    (tmp_path / "c.yaml").write_text("loss: dml\nlabel_mode: majority\n")
    options = ReproduceOptions(config_file=tmp_path / "c.yaml")
    config = _reproduce_config(QUBIQ_TASKS[0], 0, options)
    assert (config.loss, config.label_mode) == ("ce", "soft")


def test_presets_match_spec_table():
    # one name per task, the same as `reproduce --tasks` and its folders
    assert set(PRESETS) - {"pancreas-task01", "pancreatic-lesion-task01"} == {t.key for t in QUBIQ_TASKS} == {
        "brain-growth-task01", "brain-tumor-task01", "brain-tumor-task02", "brain-tumor-task03",
        "kidney-task01", "prostate-task01", "prostate-task02",
    }
    # QUBIQ 2021's 3D tasks: the 3D mode and its defaults, by preset or through resolve_config
    for name in ("pancreas", "pancreatic-lesion"):
        for config in (preset(name), resolve_config(name)):
            assert (config.dims, config.tasks, config.batch_size, config.lr) == ("3d", ("task01",), 2, 1e-3)
            assert config.preset == f"{name}-task01" and config.epochs == 150
    assert preset("brain-growth").crop_size == 256
    assert preset("brain-tumor-task2").crop_size == 224
    assert preset("brain-tumor-task2").tasks == ("task02",)
    assert preset("brain-tumor-task3").epochs == 180
    assert preset("brain-tumor-task1").epochs == 150
    assert preset("kidney").vflip == 0.0 and preset("kidney").crop_size == 320
    assert preset("prostate-task1").crop_size == 480 and preset("prostate-task1").vflip == 0.5
    assert preset("kidney").preset == "kidney-task01"


def test_other_spellings_of_a_task_are_accepted_with_a_hint(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="softseg.model.config"):
        assert task_name("brain-tumor-task2") == "brain-tumor-task02"
    assert "'brain-tumor-task2' is called 'brain-tumor-task02'" in caplog.text
    assert task_name("kidney") == "kidney-task01" and task_name("prostate-task02") == "prostate-task02"
    with pytest.raises(SoftsegError, match=r"unknown QUBIQ task 'prostate'; expected one of: brain-growth-task01"):
        task_name("prostate")  # two tasks: the dataset name alone is ambiguous


def test_unknown_preset_lists_the_names():
    with pytest.raises(SoftsegError, match="unknown QUBIQ task .liver..*brain-growth-task01"):
        preset("liver")


def test_file_overrides_preset_and_command_line_overrides_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 12\ncrop_size: 64\nlr: 0.001\nbetas: [0.8, 0.99]\n")
    c = resolve_config("kidney", f, {"epochs": 3, "crop_size": None})
    assert c.epochs == 3  # command line wins
    assert c.crop_size == 64  # file wins over preset; None on the command line means "not given"
    assert c.vflip == 0.0  # from the preset
    assert c.betas == (0.8, 0.99) and isinstance(c.lr, float)


def test_file_may_name_a_preset(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: brain-tumor-task3\nlr: 1\n")
    c = resolve_config(None, f, {})
    assert c.epochs == 180 and c.lr == 1.0 and c.preset == "brain-tumor-task03"  # its one name


def test_unknown_key_in_file_is_named(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epoch: 3\n")
    with pytest.raises(SoftsegError, match=r"c.yaml: unknown setting\(s\) epoch; valid settings are"):
        resolve_config(None, f)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SoftsegError, match="config file not found"):
        resolve_config(None, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(SoftsegError, match="expected a mapping"):
        resolve_config(None, bad)
    bad.write_text("epochs: [1\n")
    with pytest.raises(SoftsegError, match="not valid YAML"):
        resolve_config(None, bad)
    bad.write_text("epochs: many\n")
    with pytest.raises(SoftsegError, match="epochs expected an integer, found 'many'"):
        resolve_config(None, bad)
    bad.write_text("resize: 2.5\n")
    with pytest.raises(SoftsegError, match="resize expected an integer"):
        resolve_config(None, bad)


def test_validation_collects_every_problem():
    c = TrainConfig(crop_size=100, lr=1e-5, label_mode="votes", hflip=2.0, epochs=0, loss="dice",
                    dml_weight=0)
    with pytest.raises(SoftsegError) as info:
        validate(c)
    text = str(info.value)
    assert "(7)" in text
    assert "loss: expected one of ('ce', 'dml', 'ce+dml'), found 'dice'" in text
    assert "dml_weight: expected > 0, found 0" in text
    assert "crop_size: expected a positive multiple of 32" in text and "use e.g. 96" in text
    assert "lr_min <= lr" in text and "label_mode" in text and "hflip" in text and "epochs" in text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"precision": "fp8"}, "precision: expected one of"),
        ({"best_metric": "dice"}, "best_metric"),
        ({"resize": 16}, "resize: expected at least 32"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"decoder_channels": (1, 2)}, "decoder_channels"),
        ({"aug_copies": -1}, "aug_copies"),
        ({"rotate": 200.0}, "rotate"),
    ],
)
def test_single_invalid_settings(change, message):
    with pytest.raises(SoftsegError, match=message):
        validate(TrainConfig(**change))


def test_json_round_trip(tmp_path):
    c = TrainConfig(tasks=("task01", "task02"), in_channels=4, resize=128, seed=3)
    save_config(c, tmp_path / "config.json")
    assert json.loads((tmp_path / "config.json").read_text())["tasks"] == ["task01", "task02"]
    assert load_config(tmp_path / "config.json") == c
    assert from_dict(to_dict(c)) == c
    assert not list(tmp_path.glob("*.tmp"))


def test_load_config_errors(tmp_path):
    with pytest.raises(SoftsegError, match="not found; is this a softseg run folder"):
        load_config(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(SoftsegError, match="not valid JSON"):
        load_config(tmp_path / "config.json")
