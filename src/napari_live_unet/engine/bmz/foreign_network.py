"""Another tool's network inside this plugin's prediction path.

The wrapper takes the tiles the plugin prepares (batch, channel, [z,] y, x, normalised as
the package says), arranges them in the package's axis order, runs the network, applies
the package's output steps and returns the two maps the post-processing reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .output_roles import OutputRoles


class ForeignNetwork(nn.Module):
    """A BMZ network whose outputs hold a foreground and a boundary or distance map.

    Parameters
    ----------
    network : nn.Module
        The package's network (TorchScript or rebuilt from its state dict).
    input_axes : sequence of str
        The package's input axes, e.g. ``("batch", "channel", "y", "x")``: spatial axes
        among z, y, x in any order; a missing batch or channel axis is dropped from the
        tiles before the call.
    output_axes : sequence of sequence of str
        The axes of each output tensor, in the package's order.
    roles : OutputRoles
        Which channel, counted over all outputs in order, is which map.
    sigmoid : sequence of bool
        Per output tensor, whether the package declares a sigmoid step after the network.
    margins : tuple of int
        Per spatial axis, the overlap tiles keep (read by ``tile_plan.context_margin``).

    Notes
    -----
    It predicts only: ``trainable`` is False, and training or saving it as a Live U-net
    model file is refused.
    """

    outputs_activated = True
    trainable = False

    def __init__(
        self,
        network: nn.Module,
        input_axes: Sequence[str],
        output_axes: Sequence[Sequence[str]],
        roles: OutputRoles,
        sigmoid: Sequence[bool],
        margins: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.network = network
        self.input_axes = tuple(input_axes)
        self.spatial_axes = tuple(a for a in ("z", "y", "x") if a in self.input_axes)
        self.output_axes = tuple(tuple(a) for a in output_axes)
        self.roles = roles
        self.sigmoid = tuple(sigmoid)
        self.context_margins = margins
        # Where the wrapper lives, even when the package's network has no parameters.
        self.register_buffer("device_marker", torch.zeros(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "batch" in self.input_axes:
            maps = self._channels(x)
        else:  # the package takes one image at a time
            per_image = [self._channels(x[i : i + 1]) for i in range(x.shape[0])]
            maps = [torch.cat(channel) for channel in zip(*per_image, strict=True)]
        fg, aux = maps[self.roles.foreground], maps[self.roles.auxiliary]
        return torch.stack([fg, aux], dim=1).float().clamp(0.0, 1.0)

    def _channels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every output channel of the network for tiles ``x`` (N, C, *spatial), each
        shaped (N, *spatial), counted over the output tensors in order."""
        axes = ["batch", "channel", *self.spatial_axes]
        if "channel" not in self.input_axes:
            x, axes = x[:, 0], [a for a in axes if a != "channel"]
        if "batch" not in self.input_axes:
            x, axes = x[0], [a for a in axes if a != "batch"]
        result = self.network(x.permute([axes.index(a) for a in self.input_axes]))
        tensors = list(result) if isinstance(result, list | tuple) else [result]
        channels: list[torch.Tensor] = []
        for tensor, out_axes, sigmoid in zip(tensors, self.output_axes, self.sigmoid, strict=True):
            if sigmoid:
                tensor = torch.sigmoid(tensor)
            ours = [a for a in ("batch", "channel", *self.spatial_axes) if a in out_axes]
            tensor = tensor.permute([out_axes.index(a) for a in ours])
            if "batch" not in out_axes:
                tensor = tensor.unsqueeze(0)
            channels.extend(tensor.unbind(1) if "channel" in out_axes else [tensor])
        return channels
