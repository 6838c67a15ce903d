"""Hand-made BioImage Model Zoo packages from "another tool", for the import tests.

The network is a fixed function of the image, so the labels it must give are known: its
three output channels are a constant (unused), a foreground logit (objects brighter than
half the normalised range) and a boundary logit that is low everywhere. A ``sigmoid``
post-processing step turns them into probabilities, as many BMZ models declare.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class ThreeChannelModel(nn.Module):
    """(N, 1, Y, X) -> (N, 3, Y, X): constant, foreground logit, boundary logit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        foreground = 20.0 * (x - 0.5)
        return torch.cat([torch.zeros_like(x), foreground, torch.full_like(x, -10.0)], dim=1)


def disks_image(shape: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """An image of three bright disks on a dark background, and their true labels."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate([(16, 16), (20, 46), (46, 30)], start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = i
    image = np.where(labels > 0, 200.0, 10.0).astype(np.float32)
    return image, labels


def write_foreign_package(folder: Path, **options) -> Path:
    """Write a BMZ zip with TorchScript weights only; returns its path (see
    :func:`_write_package` for the options)."""
    with bioimageio_leaks_ignored():
        return _write_package(folder, **options)


def _write_package(
    folder: Path,
    *,
    channels: int = 3,
    preprocessing: str = "scale_range",
    postprocessing: bool = True,
    step: int = 8,
    names: list[str] | None = None,
    scores: bool = False,
    weights_format: str = "torchscript",
) -> Path:
    """Write the package.

    ``channels`` output channels are declared (the network's first ``channels`` are
    kept), named ``names`` (default ``out0``, ``out1``...); ``preprocessing`` is
    ``scale_range`` or ``zero_mean_unit_variance``; ``scores`` makes the outputs one
    number per channel (an image classifier), not maps; ``weights_format`` is
    ``torchscript`` or ``pytorch_state_dict`` (this file as the architecture).
    """
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    folder.mkdir(parents=True, exist_ok=True)
    network: nn.Module = ThreeChannelModel()
    if scores:
        network = _Scores(network)
    if channels != 3:
        network = _FirstChannels(network, channels)
    scripted = torch.jit.script(network)
    weights = folder / "weights.pt"
    scripted.save(str(weights))

    image, _ = disks_image()
    low, high = np.percentile(image, [1.0, 99.8])
    test_in = ((image - low) / (high - low + 1e-6)).astype(np.float32)[None, None]
    with torch.no_grad():
        test_out = network(torch.from_numpy(test_in))
        if postprocessing:
            test_out = torch.sigmoid(test_out)
    np.save(folder / "test_input.npy", test_in)
    np.save(folder / "test_output.npy", test_out.numpy())
    (folder / "README.md").write_text("# A model from another tool\n\n## Validation\n\nNone.\n")

    space = [
        v0_5.SpaceInputAxis(id=v0_5.AxisId(a), size=v0_5.ParameterizedSize(min=16, step=step))
        for a in ("y", "x")
    ]
    if preprocessing == "scale_range":
        kwargs = v0_5.ScaleRangeKwargs(
            axes=[v0_5.AxisId("y"), v0_5.AxisId("x")], min_percentile=1.0, max_percentile=99.8
        )
        pre = [v0_5.ScaleRangeDescr(kwargs=kwargs)]
    else:
        pre = [
            v0_5.ZeroMeanUnitVarianceDescr(
                kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=[v0_5.AxisId("y"), v0_5.AxisId("x")])
            )
        ]
    raw = v0_5.InputTensorDescr(
        id=v0_5.TensorId("raw"),
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("c0")]), *space],
        test_tensor=v0_5.FileDescr(source=folder / "test_input.npy"),
        preprocessing=pre,
    )
    out_space = [
        v0_5.SpaceOutputAxis(
            id=v0_5.AxisId(a), size=v0_5.SizeReference(tensor_id=raw.id, axis_id=v0_5.AxisId(a))
        )
        for a in ("y", "x")
    ]
    names = [v0_5.Identifier(n) for n in (names or [f"out{i}" for i in range(channels)])]
    out = v0_5.OutputTensorDescr(
        id=v0_5.TensorId("maps"),
        axes=[
            v0_5.BatchAxis(),
            v0_5.ChannelAxis(channel_names=names),
            *([] if scores else out_space),
        ],
        test_tensor=v0_5.FileDescr(source=folder / "test_output.npy"),
        postprocessing=[v0_5.SigmoidDescr()] if postprocessing else [],
    )
    descr = v0_5.ModelDescr(
        name="foreign-test-model",
        description="A three-channel test model made by hand",
        authors=[v0_5.Author(name="Test")],
        cite=[v0_5.CiteEntry(text="U-net", doi=v0_5.Doi("10.1007/978-3-319-24574-4_28"))],
        license=v0_5.LicenseId("MIT"),
        documentation=v0_5.FileDescr(source=folder / "README.md"),
        inputs=[raw],
        outputs=[out],
        weights=_weights(folder, weights, weights_format, network),
    )
    path = folder / "foreign.zip"
    save_bioimageio_package(descr, output_path=path)
    return path


@contextlib.contextmanager
def bioimageio_leaks_ignored():
    """bioimageio.spec 0.5.12 leaves files it hashed open; collect them here, warnings off,
    rather than let a later test's garbage collection turn them into errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


class _FirstChannels(nn.Module):
    def __init__(self, network: nn.Module, channels: int) -> None:
        super().__init__()
        self.network, self.channels = network, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[:, : self.channels]


class _Scores(nn.Module):
    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x).mean(dim=(2, 3))


def _weights(folder: Path, scripted: Path, weights_format: str, network: nn.Module):
    from bioimageio.spec.model import v0_5

    version = v0_5.Version(torch.__version__.split("+")[0])
    if weights_format == "torchscript":
        return v0_5.WeightsDescr(
            torchscript=v0_5.TorchscriptWeightsDescr(source=scripted, pytorch_version=version)
        )
    assert type(network) is ThreeChannelModel, "state-dict packages: the plain model only"
    state = folder / "state.pt"
    torch.save(network.state_dict(), state)
    architecture = v0_5.ArchitectureFromFileDescr(
        source=Path(__file__), callable=v0_5.Identifier("ThreeChannelModel")
    )
    return v0_5.WeightsDescr(
        pytorch_state_dict=v0_5.PytorchStateDictWeightsDescr(
            source=state, architecture=architecture, pytorch_version=version
        )
    )
