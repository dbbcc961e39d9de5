"""Where datasets live: explicit argument → ``$ASYMRET_DATA`` → ``~/.cache/asymret``."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "ASYMRET_DATA"


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: ``root`` if given, else ``$ASYMRET_DATA``, else ``~/.cache/asymret``."""
    if root is not None:
        return Path(root).expanduser()
    from_env = os.environ.get(DATA_ROOT_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "asymret"
