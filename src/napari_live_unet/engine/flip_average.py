"""Prediction averaged over flips: a network that sees each tile four ways.

A U-net trained on a few images is not equivariant to flips: the same nucleus, mirrored,
gets a slightly different foreground and distance map. Averaging the maps of the tile and
its flips (y, x, both; flipped back) cancels part of that noise at four times the
network's work. Whether a model predicts this way is decided on its validation data when
it is trained (see :func:`choose_flip_average`), not by default: on the built-in starter
and fluorescence it gains little, on a fine-tuned model of a new kind of image it can.
"""

from __future__ import annotations

import torch

from .unet import activate

# The flips averaged, as tensor dims of an (N, C, *spatial) batch counted from the end.
_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


class FlipAveraged(torch.nn.Module):
    """``network``'s activated outputs averaged over the tile and its three flips.

    Flips are in y and x (the last two axes), so 2D and 3D networks alike are averaged in
    plane. The outputs are activated (foreground probability, auxiliary map in [0, 1]), as
    :func:`~napari_live_unet.engine.predict.predict_stream` expects of a network with
    ``outputs_activated``.

    Parameters
    ----------
    network : torch.nn.Module
        The trained network (raw outputs, or activated ones when it has
        ``outputs_activated``, as an imported BMZ network does).
    mode : {"boundary", "distance"}
        How to activate raw outputs.
    """

    outputs_activated = True

    def __init__(self, network: torch.nn.Module, mode: str) -> None:
        super().__init__()
        self.network = network
        self.mode = mode
        # What tiling reads of a network (its U-net config, or a foreign one's margins).
        self.config = getattr(network, "config", None)
        self.context_margins = getattr(network, "context_margins", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for dims in _FLIPS:
            out = self._activated(x.flip(dims) if dims else x)
            out = out.flip(dims) if dims else out
            total = out if total is None else total + out
        assert total is not None
        return total / len(_FLIPS)

    def _activated(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.network(x)
        if getattr(self.network, "outputs_activated", False):
            return raw.float()
        return activate(raw, self.mode)


def flip_gain_needed(n_objects: int) -> float:
    """Validation score flip averaging must add to be worth four times the prediction
    time: one object's worth of AP (smaller gains are noise on a few dozen objects), and
    at least a point of AP (on large validation sets, a smaller gain is not worth it)."""
    return max(1.0 / max(n_objects, 1), 0.01)


def choose_flip_average(plain_score: float, flipped_score: float, n_objects: int) -> bool:
    """Whether a model should average flips: its validation score (mean of AP@0.5 and
    AP@0.7) with flips beats the plain one by :func:`flip_gain_needed`."""
    return flipped_score - plain_score >= flip_gain_needed(n_objects)
