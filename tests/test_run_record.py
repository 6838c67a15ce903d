"""Run records: what produced a model, shown by ``models --show`` and re-run by
``train --config`` to the same weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from napari_live_unet.cli import main
from napari_live_unet.engine.content_hash import array_sha256, weights_sha256
from napari_live_unet.engine.model_file import load_model, model_to_dict
from napari_live_unet.engine.run_record import RECORD_FORMAT

from .conftest import synthetic_nuclei, write_dataset

TINY = [
    *("--base-channels", "4", "--depth", "2", "--patch-size", "32", "--batch-size", "4"),
    *("--steps-per-epoch", "3", "--device", "cpu", "--val-ap-every", "0"),
]


@pytest.fixture(autouse=True)
def _one_thread():
    """Every run here on one CPU thread, whatever the machine (and restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(images, labels, out, *extra):
    argv = ["train", "--images", str(images), "--labels", str(labels), "--out", str(out)]
    return main([*argv, *TINY, *map(str, extra)])


def _rerun(config, images, labels, out, *extra):
    argv = ["train", "--config", str(config), "--images", str(images), "--labels", str(labels)]
    return main([*argv, "--out", str(out), *map(str, extra)])


def _json_record(capsys, model) -> dict:
    capsys.readouterr()
    assert main(["models", "--show", str(model), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_same_weights(a, b):
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_a_cli_run_records_data_settings_start_seed_versions_and_steps(tmp_path):
    images, labels = write_dataset(tmp_path / "data", n_images=3, shape=(64, 64))
    out = tmp_path / "model.pt"
    assert _train(images, labels, out, "--epochs", 2, "--seed", 7) == 0
    record = load_model(out).record  # saved in the file and loaded back
    assert record["format"] == RECORD_FORMAT and record["started_by"] == "cli"
    assert [d["name"] for d in record["data"]] == ["img0", "img1", "img2"]
    first = record["data"][0]
    pixels = tifffile.imread(images / "img0.tif")
    assert first["image"]["sha256"] == array_sha256(pixels)
    assert first["labels"]["sha256"] == array_sha256(tifffile.imread(labels / "img0.tif"))
    assert first["image"]["shape"] == [64, 64] and first["image"]["dtype"] == "uint8"
    assert first["image"]["path"].endswith("img0.tif") and first["regions"] is None
    assert record["seed"] == 7 and record["train_config"]["seed"] == 7
    assert record["train_config"]["epochs"] == 2 and record["train_config"]["batch_size"] == 4
    assert record["model_config"]["base_channels"] == 4
    assert record["resolved_train_config"]["learning_rate"] == 3e-3  # resolved: scratch
    assert record["adapt"]["polarity"] == "auto"
    assert record["start_model"] == {"kind": "scratch"}
    assert record["schedule"]["steps"] == 6 and record["schedule"]["epochs"] == 2
    assert "learning_rates" not in record["schedule"]  # an epoch schedule re-runs as it is
    assert record["recipe"]["used"] in ("few-shot", "standard")
    assert set(record["versions"]) >= {"napari-live-unet", "torch", "numpy", "python"}
    assert record["versions"]["torch"] == torch.__version__
    assert record["device"] == "cpu" and record["torch_threads"] == 1
    assert record["started"] <= record["ended"] and record["ended"].endswith("+00:00")


def test_the_pixel_hash_ignores_the_file_and_byte_order(tmp_path):
    image, _ = synthetic_nuclei((40, 50))
    wide = image.astype(np.uint16) * 200
    tifffile.imwrite(tmp_path / "a.tif", wide, compression="zlib")
    tifffile.imwrite(tmp_path / "b.tif", wide.astype(">u2"), description="other metadata")
    assert array_sha256(tifffile.imread(tmp_path / "a.tif")) == array_sha256(wide)
    assert array_sha256(tifffile.imread(tmp_path / "b.tif")) == array_sha256(wide)
    assert array_sha256(wide) != array_sha256(wide.astype(np.uint32))  # dtype counts
    assert array_sha256(wide) != array_sha256(wide.reshape(50, 40))  # shape counts
    changed = wide.copy()
    changed[3, 4] += 1
    assert array_sha256(changed) != array_sha256(wide)


def test_an_old_model_file_without_a_record_loads_and_shows_so(tmp_path, capsys):
    images, labels = write_dataset(tmp_path / "data", n_images=2, shape=(48, 48))
    out = tmp_path / "model.pt"
    assert _train(images, labels, out, "--epochs", 1) == 0
    data = model_to_dict(load_model(out))
    del data["record"]
    old = tmp_path / "old.pt"
    torch.save(data, old)
    model = load_model(old)
    assert model.record == {}
    capsys.readouterr()
    assert main(["models", "--show", str(old)]) == 0
    assert "no run record" in capsys.readouterr().out
    assert main(["models", "--show", str(old), "--json"]) == 2
    assert "no run record" in capsys.readouterr().err


def test_models_show_prints_the_record_and_json_re_runs_to_the_same_weights(tmp_path, capsys):
    images, labels = write_dataset(tmp_path / "data", n_images=3, shape=(64, 64))
    out = tmp_path / "model.pt"
    assert _train(images, labels, out, "--epochs", 2, "--seed", 3) == 0
    capsys.readouterr()
    assert main(["models", "--show", str(out)]) == 0
    text = capsys.readouterr().out
    record = load_model(out).record
    for expected in (
        "img1",
        record["data"][1]["image"]["sha256"],
        "seed: 3",
        "scratch",
        "6 optimiser steps, 2 epochs",
        f"torch={torch.__version__}",
        "on cpu",
        record["started"],
    ):
        assert expected in text, (expected, text)
    assert _json_record(capsys, out) == json.loads(json.dumps(record))
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_json_record(capsys, out)))
    again = tmp_path / "again.pt"
    assert _rerun(run, images, labels, again) == 0
    assert_same_weights(load_model(out), load_model(again))
    assert load_model(again).record["schedule"]["steps"] == 6


@pytest.mark.slow
def test_a_time_budget_run_is_replayed_step_for_step(tmp_path, capsys):
    images, labels = write_dataset(tmp_path / "data", n_images=2, shape=(48, 48))
    out = tmp_path / "model.pt"
    assert _train(images, labels, out, "--time-budget", 1.5) == 0
    record = load_model(out).record
    steps = record["schedule"]["steps"]
    assert record["schedule"]["stop_reason"] == "time budget reached"
    assert len(record["schedule"]["learning_rates"]) == steps > 0
    run = tmp_path / "run.json"
    run.write_text(json.dumps(record))
    again = tmp_path / "again.pt"
    assert _rerun(run, images, labels, again) == 0
    replayed = load_model(again)
    assert replayed.record["schedule"]["steps"] == steps
    assert_same_weights(load_model(out), replayed)


def test_changed_or_missing_data_is_refused_before_training(tmp_path, capsys, monkeypatch):
    images, labels = write_dataset(tmp_path / "data", n_images=2, shape=(48, 48))
    out = tmp_path / "model.pt"
    assert _train(images, labels, out, "--epochs", 1) == 0
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"record": load_model(out).record}))  # a whole-file dump too
    from napari_live_unet.cli import commands

    monkeypatch.setattr(commands, "train", lambda *a, **k: pytest.fail("training started"))
    changed = tifffile.imread(labels / "img1.tif")
    changed[0, 0] = changed.max() + 1
    tifffile.imwrite(labels / "img1.tif", changed)
    capsys.readouterr()
    again = tmp_path / "again.pt"
    assert _rerun(run, images, labels, again) == 2
    err = capsys.readouterr().err
    assert "img1.tif: its pixels differ from the labels the recorded run trained on" in err
    (images / "img0.tif").unlink()
    assert _rerun(run, images, labels, again) == 2
    assert "no img0.tif, the image the recorded run trained on" in capsys.readouterr().err
    assert _rerun(run, images, labels, again, "--epochs", 5, "--seed", 2) == 2
    assert "--epochs, --seed: a re-run with --config takes every setting" in (
        capsys.readouterr().err
    )
    assert not again.exists()


def test_a_fine_tuned_run_needs_and_checks_its_starting_model_file(tmp_path, capsys):
    images, labels = write_dataset(tmp_path / "data", n_images=2, shape=(48, 48))
    start = tmp_path / "start.pt"
    assert _train(images, labels, start, "--epochs", 1) == 0
    out = tmp_path / "model.pt"
    assert _train(images, labels, out, "--epochs", 1, "--init-model", start) == 0
    record = load_model(out).record
    assert record["start_model"]["kind"] == "file"
    assert record["start_model"]["file"] == "start.pt"
    assert record["start_model"]["weights_sha256"] == weights_sha256(
        load_model(start).network.state_dict()
    )
    assert record["start_model"]["record"]["start_model"] == {"kind": "scratch"}  # lineage
    run = tmp_path / "run.json"
    run.write_text(json.dumps(record))
    capsys.readouterr()
    assert _rerun(run, images, labels, tmp_path / "a.pt") == 2
    assert "pass that model file with --init-model" in capsys.readouterr().err
    other = tmp_path / "other.pt"  # another network of the same architecture
    assert _train(images, labels, other, "--epochs", 1, "--seed", 5) == 0
    capsys.readouterr()
    assert _rerun(run, images, labels, tmp_path / "b.pt", "--init-model", other) == 2
    assert "not those the recorded run started from" in capsys.readouterr().err
    assert _rerun(run, images, labels, tmp_path / "c.pt", "--init-model", start) == 0
    assert_same_weights(load_model(out), load_model(tmp_path / "c.pt"))
