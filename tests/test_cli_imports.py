"""What the ``live-unet`` commands import (issue 24, start-up): only what they use.

Each check runs in a new interpreter and looks at ``sys.modules`` afterwards; the time it
takes belongs to ``benchmarks/startup.py``, not here.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import napari_live_unet
from napari_live_unet import engine

from .conftest import predict_argv

SAMPLE_TEST_IMAGES = Path(napari_live_unet.__file__).parent / "sample" / "test" / "images"

# Top-level packages none of which `live-unet --help` needs.
NOT_FOR_HELP = [
    "torch",
    "numpy",
    "scipy",
    "skimage",
    "tifffile",
    "tqdm",
    "zarr",
    "ome_zarr",
    "dask",
    "distributed",
    "napari",
    "qtpy",
]


def _modules_after(code: str) -> set[str]:
    """The modules loaded once ``code`` has run in a new interpreter."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted(sys.modules)))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def _loaded(modules: set[str], packages: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(packages))


@pytest.mark.parametrize("command", [[], ["predict"], ["train"], ["evaluate"], ["models"]])
def test_help_imports_neither_torch_nor_the_engines_dependencies(command):
    argv = [*command, "--help"]
    modules = _modules_after(f"""
        import contextlib, io
        from napari_live_unet.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as text:
            try:
                main({argv!r})
            except SystemExit as exc:
                assert exc.code == 0, exc.code
        assert "usage: live-unet" in text.getvalue()
    """)
    assert not _loaded(modules, NOT_FOR_HELP)
    engine_modules = {m for m in modules if m.startswith("napari_live_unet.engine.")}
    assert engine_modules == {"napari_live_unet.engine.errors"}


def test_importing_the_engine_package_imports_none_of_its_submodules():
    modules = _modules_after("import napari_live_unet.engine")
    assert not _loaded(modules, NOT_FOR_HELP)
    assert not [m for m in modules if m.startswith("napari_live_unet.engine.")]


@pytest.mark.slow
def test_predict_on_a_tiff_folder_imports_no_cluster_no_ome_zarr_no_training(tmp_path):
    argv = predict_argv("nuclei", SAMPLE_TEST_IMAGES, tmp_path / "out")
    modules = _modules_after(f"""
        from napari_live_unet.cli import main
        assert main({argv!r}) == 0
    """)
    assert (tmp_path / "out" / "0bda515e370294ed.tif").is_file()
    assert not _loaded(modules, ["dask", "distributed", "ome_zarr", "napari", "qtpy"])
    for unused in ("train", "training_run", "doubt", "ome_zarr_labels", "dask_blocks"):
        assert f"napari_live_unet.engine.{unused}" not in modules, unused


def test_every_exported_engine_name_imports_from_its_submodule():
    import importlib

    assert sorted(engine.__all__) == sorted(engine._MODULE_OF)
    for name in engine.__all__:
        module = importlib.import_module(f"napari_live_unet.engine.{engine._MODULE_OF[name]}")
        assert getattr(engine, name) is getattr(module, name), name
    assert set(engine.__all__) <= set(dir(engine))


def test_engine_train_stays_the_function_when_its_module_is_imported_first():
    # `train` is both a submodule and the exported function; importing the submodule
    # directly (as the napari training job does) must not hide the function.
    modules = _modules_after("""
        import importlib
        module = importlib.import_module("napari_live_unet.engine.train")
        import napari_live_unet.engine as engine
        from napari_live_unet.engine import run_training, train
        assert train is module.train and engine.train is module.train, engine.train
        assert run_training is module.run_training
    """)
    assert "napari_live_unet.engine.train" in modules


def test_a_missing_engine_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        _ = engine.no_such_name
    assert not hasattr(engine, "no_such_name")
    assert engine.io.read_tiff is not None  # submodules resolve as before


def test_the_napari_manifest_commands_import():
    npe2 = pytest.importorskip("npe2")
    pytest.importorskip("qtpy.QtWidgets")
    manifest = npe2.PluginManifest.from_distribution("napari-live-unet")
    manifest.validate_imports()
