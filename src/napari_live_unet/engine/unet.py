"""A 2D/3D U-net whose outputs feed the boundary or distance post-processing.

This file imports only torch and the standard library at run time: BioImage Model Zoo
packages ship it verbatim as the architecture of their PyTorch weights
(:class:`ExportedUNet`), and its networks compile with ``torch.jit.script``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .config import ModelConfig


def _norm(kind: str, channels: int, ndim: int) -> nn.Module:
    if kind == "batch":
        return (nn.BatchNorm2d if ndim == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if ndim == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class _FlatConv3d(nn.Conv3d):
    """A 3D convolution with a kernel one slice deep, run as a 2D convolution of every slice.

    Same parameters (and file format) as ``nn.Conv3d``; oneDNN's 2D kernels run this 2-3x
    faster on a CPU than the 3D ones. In channels-last layout the reshapes are views.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The y/x padding as a list: TorchScript reads neither ``self.padding``'s union type
        # nor a generator over it.
        self.padding_yx: list[int] = [int(p) for p in self.padding[1:]]  # type: ignore[index]

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = input.shape
        slices = input.transpose(1, 2).reshape(n * d, c, h, w)
        out = F.conv2d(slices, self.weight[:, :, 0], self.bias, padding=self.padding_yx)
        return out.reshape(n, d, -1, h, w).transpose(1, 2)


class _ConvBlock(nn.Sequential):
    def __init__(
        self, cin: int, cout: int, ndim: int, norm: str, kernel: tuple[int, ...] | None = None
    ) -> None:
        # torch's stubs type sizes as fixed-length tuples; ours have one entry per axis.
        size: Any = kernel or (3,) * ndim
        flat = ndim == 3 and size[0] == 1
        conv = nn.Conv2d if ndim == 2 else (_FlatConv3d if flat else nn.Conv3d)
        bias = norm == "none"
        padding: Any = tuple(k // 2 for k in size)
        super().__init__(
            conv(cin, cout, size, padding=padding, bias=bias),
            _norm(norm, cout, ndim),
            nn.ReLU(inplace=True),
            conv(cout, cout, size, padding=padding, bias=bias),
            _norm(norm, cout, ndim),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-net with ``config.depth`` down-sampling steps.

    Each level pools and convolves as ``config.level_pooling`` and ``config.level_kernels``
    say: for anisotropic volumes, "flat" first levels work in y/x only, then full 3D.

    The raw output has ``config.out_channels`` channels: in boundary mode three class logits
    (background, interior, boundary); in distance mode a foreground logit and the
    normalised distance. :func:`activate` turns them into the two maps post-processing
    reads.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        nd, norm = config.ndim, config.norm
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        pool = nn.MaxPool2d if nd == 2 else nn.MaxPool3d
        up = nn.ConvTranspose2d if nd == 2 else nn.ConvTranspose3d
        conv = nn.Conv2d if nd == 2 else nn.Conv3d
        pools, kernels = cast(Any, config.level_pooling), config.level_kernels
        self.down = nn.ModuleList()
        cin = config.in_channels
        for w, kernel in zip(widths, kernels, strict=True):
            self.down.append(_ConvBlock(cin, w, nd, norm, kernel))
            cin = w
        # Pooling has no parameters: files saved before per-level pooling still load.
        self.pools = nn.ModuleList(pool(p, stride=p) for p in pools)
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(config.depth)):
            w_low, w_high, p = widths[level + 1], widths[level], pools[level]
            self.up.append(up(w_low, w_high, p, stride=p))
            self.up_blocks.append(_ConvBlock(2 * w_high, w_high, nd, norm, kernels[level]))
        self.head = conv(widths[0], config.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw_forward(x)

    def raw_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The raw output (``config.out_channels`` channels); TorchScript compiles it."""
        skips: list[torch.Tensor] = []
        # zip without strict=: TorchScript knows no keyword arguments of zip. There is one
        # pool fewer than down blocks: the last block is the bottom.
        for pool, block in zip(self.pools, self.down):  # noqa: B905
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.down[-1](x)
        for up, block in zip(self.up, self.up_blocks):  # noqa: B905  # both depth long
            x = up(x)
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


class _Layout:
    """The few ModelConfig fields :class:`UNet` reads, from plain values (no config
    module needed)."""

    def __init__(
        self,
        ndim: int,
        in_channels: int,
        mode: str,
        base_channels: int,
        depth: int,
        norm: str,
        pooling: list[list[int]] | None,
        kernels: list[list[int]] | None,
    ) -> None:
        self.ndim, self.in_channels, self.mode = int(ndim), int(in_channels), str(mode)
        self.base_channels, self.depth, self.norm = int(base_channels), int(depth), str(norm)
        self.out_channels = 3 if self.mode == "boundary" else 2
        pools = pooling or [[2] * self.ndim] * self.depth
        sizes = kernels or [[3] * self.ndim] * (self.depth + 1)
        self.level_pooling = tuple(tuple(int(v) for v in level) for level in pools)
        self.level_kernels = tuple(tuple(int(v) for v in level) for level in sizes)


class ExportedUNet(UNet):
    """The U-net as BioImage Model Zoo packages ship it: built from plain (JSON) values,
    returning the two maps post-processing reads, already in [0, 1].

    Parameters are those of ``ModelConfig`` (``pooling`` and ``kernels`` as lists, or None
    for 2 and 3 everywhere). The output has two channels: the foreground probability, then
    the boundary probability (``mode="boundary"``) or the normalised distance to the
    object's edge (``mode="distance"``); see :func:`activate`.
    """

    def __init__(
        self,
        ndim: int = 2,
        in_channels: int = 1,
        mode: str = "distance",
        base_channels: int = 16,
        depth: int = 3,
        norm: str = "batch",
        pooling: list[list[int]] | None = None,
        kernels: list[list[int]] | None = None,
    ) -> None:
        if mode not in ("boundary", "distance"):
            raise ValueError(f"mode must be 'boundary' or 'distance', got {mode!r}")
        layout = _Layout(ndim, in_channels, mode, base_channels, depth, norm, pooling, kernels)
        super().__init__(cast("ModelConfig", layout))  # UNet reads only the layout's fields
        self.mode = layout.mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(self.raw_forward(x), self.mode)


def widen_input(network: UNet, weights: torch.Tensor) -> UNet:
    """Make a one-channel network read ``len(weights)`` channels, starting where it was.

    The first convolution's kernel is spread over the channels in proportion to
    ``weights`` (summing to 1, e.g. luminance weights for RGB), so on the first step the
    network sees the weighted sum of the channels, as before; training then may learn
    what the sum threw away.
    """
    block = network.down[0]
    assert isinstance(block, _ConvBlock)  # UNet.down holds _ConvBlocks
    first = block[0]
    assert isinstance(first, nn.Conv2d | nn.Conv3d)  # a _ConvBlock starts with a convolution
    if first.in_channels != 1:
        raise ValueError(f"the network already reads {first.in_channels} channels")
    # torch types the stored kernel_size/padding as tuple[int, ...], the constructors as
    # fixed-length tuples: a stub imprecision.
    conv = type(first)(
        len(weights),
        first.out_channels,
        first.kernel_size,  # pyright: ignore[reportArgumentType]
        padding=first.padding,  # pyright: ignore[reportArgumentType]
        bias=first.bias is not None,
    )
    with torch.no_grad():
        shape = (1, -1) + (1,) * (first.weight.ndim - 2)
        conv.weight.copy_(first.weight * weights.to(first.weight).reshape(shape))
        if first.bias is not None:
            assert conv.bias is not None  # made with bias=True above
            conv.bias.copy_(first.bias)
    block[0] = conv.to(first.weight.device)
    network.config = dataclasses.replace(network.config, in_channels=len(weights))
    return network


def activate(raw: torch.Tensor, mode: str) -> torch.Tensor:
    """Map raw network output (N, C, ...) to (N, 2, ...): foreground probability, auxiliary.

    The auxiliary map is the boundary probability in boundary mode and the normalised
    distance (clipped to [0, 1]) in distance mode.
    """
    raw = raw.float()
    if mode == "boundary":
        prob = torch.softmax(raw, dim=1)
        return torch.stack([1.0 - prob[:, 0], prob[:, 2]], dim=1)
    return torch.stack([torch.sigmoid(raw[:, 0]), raw[:, 1].clamp(0.0, 1.0)], dim=1)


def memory_format(ndim: int) -> torch.memory_format:
    """Channels-last layout for ``ndim`` spatial dims: markedly faster convolutions on CPUs
    (oneDNN) and on tensor-core GPUs."""
    return torch.channels_last if ndim == 2 else torch.channels_last_3d


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
