"""The engine is importable without napari/Qt; the npe2 manifest is valid and found."""

import subprocess
import sys
import textwrap
from pathlib import Path

BLOCKED = [
    "napari",
    "magicgui",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "superqt",
    "vispy",
    "npe2",
    "pyqtgraph",
]


def test_engine_imports_and_trains_without_napari_or_qt():
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {BLOCKED!r}:
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import napari_live_unet.engine as engine
        import napari_live_unet.cli, napari_live_unet.cli.commands
        import napari_live_unet.engine.sample_data
        img = np.zeros((48, 48), np.uint8); lab = np.zeros((48, 48), np.uint8)
        img[10:20, 10:20] = 200; lab[10:20, 10:20] = 1
        cfg = engine.TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=32,
                                 val_fraction=0.0)
        model = engine.run_training([engine.make_pair(img, lab)], cfg,
            model_config=engine.ModelConfig(base_channels=4, depth=2), device='cpu')
        assert model.segment(img).shape == (48, 48)
        bad = [m for m in sys.modules if m.split('.')[0] in {BLOCKED!r}]
        assert not bad, bad
        print('ok')
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_manifest_is_valid_and_sample_loads():
    npe2 = __import__("pytest").importorskip("npe2")
    from napari_live_unet.layers.sample_layers import make_sample_data

    manifest = npe2.PluginManifest.from_distribution("napari-live-unet")
    assert manifest.name == "napari-live-unet"
    assert manifest.contributions.sample_data
    # The reader opens exactly the suffixes the package knows as model files and packages.
    from napari_live_unet.engine.model_file import MODEL_SUFFIXES, PACKAGE_SUFFIX

    (reader,) = manifest.contributions.readers
    assert reader.filename_patterns == [f"*{s}" for s in (*MODEL_SUFFIXES, PACKAGE_SUFFIX)]
    layers = make_sample_data()
    (image, _, kind_i), (labels, _, kind_l) = layers
    assert (kind_i, kind_l) == ("image", "labels")
    assert image.shape == labels.shape and labels.max() > 10


@__import__("pytest").mark.gui
def test_napari_finds_the_widgets_and_the_sample(make_napari_viewer):
    """What a user clicks: File > Open Sample and Plugins > Live U-net > each widget."""
    viewer = make_napari_viewer()
    viewer.open_sample("napari-live-unet", "nuclei")
    assert [layer.name for layer in viewer.layers] == [
        "nuclei (DSB2018 sample)",
        "nuclei ground truth",
    ]
    for name in ("Annotate", "Train", "Predict"):
        _, widget = viewer.window.add_plugin_dock_widget("napari-live-unet", name)
        assert type(widget).__name__ == f"{name}Widget"
        widget.reset_choices()  # sees the viewer's layers (napari hands it a proxy viewer)
    assert widget.image_combo.value.name == "nuclei (DSB2018 sample)"
