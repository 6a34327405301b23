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


def f32_rate(ctx, param, value):
    """click callback of a learning rate: a finite number that stays finite and above 0
    in float32, the precision the training step uses it in (FloatRange checks the
    double: 1e39 passes there and is inf in float32, 1e-50 is 0)."""
    if value is None:
        return value
    if not np.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number")
    with np.errstate(over="ignore", under="ignore"):
        single = np.float32(value)
    if not np.isfinite(single):
        raise click.BadParameter(f"{value:g} is beyond the float32 range (at most {np.finfo(np.float32).max:.4g}), "
                                 "the precision the rate is used in")
    if single == 0:
        raise click.BadParameter(f"{value:g} is 0 in float32, the precision the rate is used in (the smallest "
                                 f"rate is {np.finfo(np.float32).smallest_subnormal:.4g})")
    return value


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


TORCH_ENGINE_DEFAULTS = {"device": "cpu", "nproc": 1, "fast": False, "amp": False, "crop_pad": 0, "flip": False}


def check_c_engine_options(options: dict) -> None:
    """The torch engine's options (--device, --nproc, --fast, --amp, --crop-pad, --flip) are
    refused with --engine c."""
    given = [k for k, default in TORCH_ENGINE_DEFAULTS.items() if k in options and options[k] != default]
    if given:
        from boldc.errors import BoldcError

        raise BoldcError(f"{', '.join('--' + k.replace('_', '-') for k in given)}: only with --engine torch")
