"""A run record in words, for ``live-unet models --show``."""

from __future__ import annotations

from typing import Any


def describe_record(record: dict[str, Any]) -> list[str]:
    """Lines that say what produced a model: data, settings, start, seed, versions, time.

    Parameters
    ----------
    record : dict
        A model's ``record`` (see :mod:`.run_record`); empty for models saved before run
        records existed.
    """
    if not record:
        return [
            "no run record: this model was saved before napari-live-unet recorded runs, "
            "or by another tool"
        ]
    schedule = record.get("schedule", {})
    lines = [
        f"trained from {record.get('started_by', '?')} on {record.get('device', '?')} "
        f"({record.get('torch_threads', '?')} CPU threads), "
        f"{record.get('started', '?')} to {record.get('ended', '?')} (UTC)",
        f"steps: {schedule.get('steps', '?')} optimiser steps, {schedule.get('epochs', '?')} "
        f"epochs, ended: {schedule.get('stop_reason', '?')}"
        + (
            " (each step's learning rate recorded: a re-run replays them)"
            if schedule.get("learning_rates") is not None
            else ""
        ),
        f"seed: {record.get('seed')}",
        f"start model: {describe_start(record.get('start_model', {}))}",
        "data:",
    ]
    for entry in record.get("data", []):
        lines += _data_lines(entry)
    recipe = record.get("recipe", {})
    if recipe.get("reason"):
        lines.append(f"recipe: {recipe['reason']}")
    lines.append("input fitting: " + _pairs(record.get("adapt", {})))
    lines.append("training settings (as given): " + _pairs(record.get("train_config", {})))
    if record.get("model_config"):
        lines.append("model settings (as given): " + _pairs(record["model_config"]))
    if record.get("resolved_model_config"):
        lines.append("network: " + _pairs(record["resolved_model_config"]))
    lines.append("versions: " + _pairs(record.get("versions", {})))
    return lines


def describe_start(start: dict[str, Any]) -> str:
    """The starting model in words, with the hash of its weights."""
    kind = start.get("kind", "?")
    weights = f" (weights {start['weights_sha256']})" if start.get("weights_sha256") else ""
    if kind == "builtin":
        return f"built-in '{start.get('name')}'{weights}"
    if kind == "file":
        return f"file {start.get('file')} ({start.get('path')}){weights}"
    if kind == "current":
        return f"continued from the current model{weights}"
    return "scratch (a new network)"


def _data_lines(entry: dict[str, Any]) -> list[str]:
    image, labels = entry.get("image", {}), entry.get("labels", {})
    role = " (validation)" if entry.get("role") == "val" else ""
    lines = [f"  {entry.get('name')}{role}"]
    for what, item in (("image", image), ("labels", labels)):
        where = f", from {item['path']}" if item.get("path") else ""
        lines.append(
            f"    {what} '{item.get('name')}': {item.get('dtype')} "
            f"{'x'.join(str(n) for n in item.get('shape', []))} {item.get('sha256')}{where}"
        )
    regions = entry.get("regions")
    if regions is None:
        lines.append("    annotated: the whole image")
    elif not regions:
        lines.append("    annotated: every frame with objects")
    else:
        roles = [r.get("role") for r in regions]
        counts = ", ".join(f"{roles.count(r)} {r}" for r in ("train", "val") if r in roles)
        lines.append(f"    regions: {counts}")
    return lines


def _pairs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())
