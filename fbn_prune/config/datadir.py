"""Where ``data:`` files are found: the package's own data first, then the user's data folder.

The package ships a few files of its own (``fbn_prune/data/``: the built-in calibration sample and
its license). Everything else, such as the local evaluation tasks' files, lives in a data folder the
user names with ``--data-dir`` or the ``FBN_PRUNE_DATA`` environment variable (the option wins).
There is no default folder: without either, a ``data:`` name that is not in the package is refused.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from fbn_prune.errors import UserError

DATA_ENV = "FBN_PRUNE_DATA"
"""Environment variable naming the data folder (the ``--data-dir`` option wins over it)."""

DATA_PREFIX = "data:"
"""A source or file named ``data:REL`` is REL inside the package data, else inside the data folder."""

HINT = f"set --data-dir or {DATA_ENV} to the data folder"


def package_data() -> Path:
    """The package's own data folder (``fbn_prune/data``), found with :mod:`importlib.resources`."""
    return Path(str(resources.files("fbn_prune.data")))


def find(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The data folder the user chose: ``explicit`` (``--data-dir``), else ``$FBN_PRUNE_DATA``; None when neither.

    Raises UserError when a named folder does not exist or is not a folder.
    """
    for value, origin in ((explicit, "data directory"), (os.environ.get(DATA_ENV), DATA_ENV)):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise UserError(f"{origin} {value} is not a folder; {HINT}.")
            return path.resolve()
    return None


def require(explicit: str | os.PathLike[str] | None = None) -> Path:
    """:func:`find`, refusing (UserError) when no data folder was named."""
    data = find(explicit)
    if data is None:
        raise UserError(f"no data folder given; {HINT}.")
    return data


def resolve(name: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The file a ``data:REL`` name stands for: ``fbn_prune/data/REL`` if the package has it, else REL in
    the data folder (which need not exist yet: the caller checks the file).

    Raises UserError for an empty or escaping REL (``..``, absolute), and when REL is not in the
    package and no data folder was named.
    """
    rel = name[len(DATA_PREFIX):] if name.startswith(DATA_PREFIX) else name
    parts = Path(rel).parts
    if not rel.strip() or Path(rel).is_absolute() or ".." in parts:
        raise UserError(f"{DATA_PREFIX}{rel}: give a file inside the data folder, e.g. data:wikitext2/valid.txt.")
    own = package_data() / rel
    if own.is_file():
        return own
    data = find(explicit)
    if data is None:
        raise UserError(f"{DATA_PREFIX}{rel} is not in fbn_prune's own data and no data folder was given; {HINT}.")
    return data / rel
