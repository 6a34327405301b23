"""Helpers shared by the CLI commands: argument types, array files, output."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import click
import numpy as np

from boldc.errors import ArtefactError
from boldc.fileio import atomic_write

# An existing file argument; the commands open it themselves to give boldc's messages.
FILE = click.Path(dir_okay=False, path_type=Path)


def load_array_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays of a .npy (one array, named by the file stem) or .npz file."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return {path.stem: data}
        with data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ArtefactError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ArtefactError(f"{path}: is a directory, not an array file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # a truncated .npz is a bad zip
        reason = " ".join(str(exc).split())[:120]
        raise ArtefactError(f"{path}: not a readable .npy/.npz file ({reason})") from None


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """One array to .npy, several (or a .npz name) to .npz; written atomically."""
    path = Path(path)
    buf = io.BytesIO()
    if path.suffix == ".npz":
        np.savez(buf, **arrays)
    elif len(arrays) == 1:
        np.save(buf, next(iter(arrays.values())))
    else:
        raise ArtefactError(f"{path}: the function has {len(arrays)} outputs; give a .npz file name")
    atomic_write(path, buf.getvalue())


def save_json(path: str | os.PathLike, value) -> None:
    """``value`` as indented JSON, written atomically."""
    atomic_write(path, json.dumps(value, indent=2) + "\n")
