"""Which output channel of another tool's model is the foreground, and which the auxiliary
map (boundary probability or distance) that splits touching objects."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MODES
from ..errors import InputError

ROLES_HINT = (
    "say which channel is which, e.g. `--bmz-outputs foreground=1,boundary=2` (or "
    "`distance=N` for a distance map); in the Predict dock, choose the file with "
    "Model ▸ model file… and pick the channels"
)


@dataclass(frozen=True)
class OutputRoles:
    """Output channels (numbered over all output tensors, in order) and their meaning.

    Parameters
    ----------
    foreground : int
        Channel holding the foreground probability (0..1, or a logit the package turns
        into one with a ``sigmoid`` step).
    auxiliary : int
        Channel holding the boundary probability or the normalised distance (0..1).
    kind : {"boundary", "distance"}
        What ``auxiliary`` holds; it chooses the post-processing.
    """

    foreground: int
    auxiliary: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in MODES:
            raise InputError(f"output kind must be one of {MODES}, got {self.kind!r}")
        for name in ("foreground", "auxiliary"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{name} channel must be 0 or more, got {value!r}")
        if self.foreground == self.auxiliary:
            raise InputError(
                f"the foreground and the {self.kind} map must be different channels "
                f"(both are {self.foreground})"
            )

    def describe(self) -> str:
        """The roles as the ``--bmz-outputs`` option writes them."""
        return f"foreground={self.foreground},{self.kind}={self.auxiliary}"


def parse_output_roles(text: str) -> OutputRoles:
    """Read roles written as ``foreground=N,boundary=M`` (or ``distance=M``).

    Raises
    ------
    InputError
        If the text does not name a foreground channel and one boundary or distance channel.
    """
    roles: dict[str, int] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in ("foreground", *MODES) or not value.strip().isdigit():
            raise InputError(
                f"--bmz-outputs {text!r}: write foreground=N and boundary=M (or distance=M), "
                "N and M output channel numbers counted from 0"
            )
        if name in roles:
            raise InputError(f"--bmz-outputs {text!r}: {name} is given twice")
        roles[name] = int(value)
    kinds = [k for k in MODES if k in roles]
    if "foreground" not in roles or len(kinds) != 1:
        raise InputError(
            f"--bmz-outputs {text!r}: give the foreground channel and exactly one of "
            "boundary=M or distance=M"
        )
    return OutputRoles(roles["foreground"], roles[kinds[0]], kinds[0])


def roles_from_names(names: list[str]) -> OutputRoles | None:
    """Roles read from channel names when they say so unambiguously (one channel named
    ``foreground``, one ``boundary`` or ``distance``); None otherwise."""
    lowered = [n.lower() for n in names]
    found = {
        role: [i for i, n in enumerate(lowered) if n == role] for role in ("foreground", *MODES)
    }
    kinds = [k for k in MODES if len(found[k]) == 1]
    if len(found["foreground"]) != 1 or len(kinds) != 1:
        return None
    return OutputRoles(found["foreground"][0], found[kinds[0]][0], kinds[0])
