"""Checks run before any long work: outputs never replace inputs and can be written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_an_input(
    out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], option: str = "--out"
) -> None:
    """Refuse an output that is, or lies inside, an input file or folder (symlinks followed).

    Raises
    ------
    InputError
        Naming the output and the input it would overwrite.
    """
    target = Path(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if _inside(target, source) or (source.is_file() and target == source):
            raise InputError(
                f"{option} {out}: is or lies inside the input {given}, whose files would be "
                "overwritten. Choose another location."
            )


def check_writable(out: str | os.PathLike, option: str = "--out", *, folder: bool = False) -> None:
    """Make sure ``out`` (a file, or a folder when ``folder``) can be written, by creating and
    removing a temporary file where it will go; creates nothing else.

    Raises
    ------
    InputError
        If the location is missing, not a folder, or not writable.
    """
    out = Path(out)
    if folder and out.exists() and not out.is_dir():
        raise InputError(f"{option} {out}: exists and is not a folder")
    if not folder and out.is_dir():
        raise InputError(f"{option} {out}: is a folder; give a file name such as model.pt")
    # The nearest existing folder the output will be created in.
    parent = out if folder else out.parent
    parent = parent if str(parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{option} {out}: {parent} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=".live-unet-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(
            f"{option} {out}: cannot write in {parent} ({exc.strerror or exc}). Choose a "
            "folder you can write to."
        ) from None
