"""The ``--channel/--polarity/--diameter/--voxel-size`` options as engine settings.

Shared by ``train`` and ``predict``; kept apart from :mod:`.commands` so that ``predict``
does not import the training loop.
"""

from __future__ import annotations

import argparse

from ..engine.errors import InputError
from ..engine.image_adapter import AdaptOptions


def adapt_options(args: argparse.Namespace) -> AdaptOptions:
    """The fitting choices of a command, checked before any data is read.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments with ``channel``, ``polarity``, ``diameter``, ``voxel_size`` and,
        for ``train``, ``all_channels``.

    Returns
    -------
    AdaptOptions
        The choices; their messages name the option ("diameter must be a positive number
        of pixels ...").

    Raises
    ------
    InputError
        If a value is not valid.
    """
    return AdaptOptions(
        channel=args.channel,
        polarity=args.polarity,
        diameter=args.diameter,
        all_channels=getattr(args, "all_channels", False),
        voxel_size=parse_voxel_size(args.voxel_size),
    )


def parse_voxel_size(text: str | None) -> tuple[float, ...] | None:
    """``--voxel-size 2,0.5,0.5`` as numbers; positivity is checked by AdaptOptions.

    Parameters
    ----------
    text : str or None
        The option's value, Z,Y,X (or Y,X); None when it was not given.

    Returns
    -------
    tuple of float or None
        One number per axis, or None for None.

    Raises
    ------
    InputError
        If a part is not a number.
    """
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise InputError(
            f"--voxel-size must be numbers separated by commas, Z,Y,X (or Y,X in 2D), "
            f"e.g. 2,0.5,0.5; got {text!r}"
        ) from None
