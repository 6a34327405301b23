"""The standalone C folder for a device (``boldc compile model.bir -o outdir/``).

The folder holds everything needed to build and run the model with a C compiler and
make, no Python: ``<name>.c/.h`` (generated), the runtime (``boldc_rt.h``,
``bd_*.c``), ``<name>_weights.bin`` (the params image behind a 32-byte header with
its CRC-32 and the model's hash), an example ``main.c`` that reads input files and
prints the outputs, a ``Makefile``, a ``README.txt`` and the marker file
``.boldc-export`` (``--force`` replaces only a folder that has it). It is written
into a temp directory next to the destination and renamed into place: a reader
sees no folder or the complete one.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

from boldc.backend.build import RUNTIME_FILES, runtime_text
from boldc.backend.emit import EmitError, Options, Program, environment, generate
from boldc.errors import ArtefactError
from boldc.fileio import check_parent
from boldc.ir.core import Module

MAGIC = b"BOLDCW01"
MARKER = ".boldc-export"  # says "a boldc export": only such a folder (or an empty one) may be replaced


def weights_blob(program: Program, image: bytes) -> bytes:
    """Header (magic, image bytes, CRC-32, 0, model hash; little-endian) + image."""
    header = MAGIC + struct.pack("<QII Q", len(image), zlib.crc32(image) & 0xFFFFFFFF, 0, program.model_hash)
    assert len(header) == 32
    return header + image


def _io_descriptions(program: Program, func: str,
                     outputs_per_sample: bool = True) -> tuple[dict, list[dict], list[dict]]:
    code = program.functions.get(func)
    if code is None:
        raise EmitError(f"the module has no function @{func} to run from main.c")
    inputs, outputs = [], []
    for a, api in zip(code.args, code.arg_api):
        # one sample with a batch symbol; the whole tensor of a fixed-shape function
        inputs.append({"name": a.name, "type": str(a.type), "ctype": api.ctype, "per_sample": api.count(1),
                       "file": f"{a.name}.bin"})
    for v, api in zip(code.returns, code.ret_api):
        if outputs_per_sample and code.has_batch and not (v.type.shape and isinstance(v.type.shape[0], str)):
            raise EmitError(f"main.c prints one line per sample: output {v.ref} {v.type} of @{func} has no "
                            "leading batch dimension")
        fmt, cast = ("%.9g", "(double)") if api.dtype.is_float else ("%d", "(int)")
        outputs.append({"type": str(v.type), "ctype": api.ctype, "per_sample": api.count(1), "fmt": fmt,
                        "cast": cast})
    f = {"name": func, "cname": code.cname, "has_batch": code.has_batch}
    return f, inputs, outputs


def _check_destination(out: Path, force: bool) -> Path:
    """The folder's parent, after refusing a destination we must not (over)write: a
    file, a non-empty folder without ``force``, and with ``force`` a non-empty folder
    that is not an export (no MARKER file): --force never deletes a user's folder."""
    if out.exists() and not out.is_dir():
        raise ArtefactError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ArtefactError(f"{out}: directory exists and is not empty (use --force to replace an earlier "
                                "export)")
        if not (out / MARKER).is_file():
            raise ArtefactError(f"{out}: --force replaces only an empty folder or one written by boldc compile "
                                f"(with its {MARKER} file), and this one is neither: remove it yourself or "
                                "choose another folder")
    return check_parent(out)


def _check_names(prefix: str, names: list[str], train: bool) -> None:
    """Refuse a model name whose files, or what ``make`` builds from them (an object
    per .c, the programs ``<name>`` and ``<name>_train``), would overwrite another file
    of the folder (``--name main`` would replace main.c by the model)."""
    built = [n[:-2] + ".o" for n in names if n.endswith(".c")] + [prefix] + ([f"{prefix}_train"] if train else [])
    every = names + built
    clash = sorted({n for n in every if every.count(n) > 1})
    if clash:
        raise EmitError(f"model name '{prefix}' is taken by a file of the exported folder ({', '.join(clash)}): "
                        "choose another --name")


def _write_into_place(files: dict[str, str | bytes], out: Path, parent: Path) -> None:
    """Write ``files`` into a temp folder next to ``out`` and rename it into place (an
    existing ``out`` is moved aside first and put back if the rename fails)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        for name, data in files.items():
            if isinstance(data, bytes):
                (tmp / name).write_bytes(data)
            else:
                (tmp / name).write_text(data)
        os.chmod(tmp, 0o755)
        if not out.exists():
            os.rename(tmp, out)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
        os.rmdir(old)
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_folder(program: Program, image: bytes, outdir: str | os.PathLike, func: str = "forward",
                 force: bool = False) -> Path:
    """Write the standalone folder for ``program`` (params ``image``) at ``outdir``; with a
    @train_step in the program, also the training example ``train_main.c``."""
    from boldc.version import __version__

    out = Path(outdir)
    parent = _check_destination(out, force)
    prefix = program.options.name
    f, inputs, outputs = _io_descriptions(program, func)
    env = environment()
    train = None
    if "train_step" in program.functions:
        tf, t_inputs, _ = _io_descriptions(program, "train_step", outputs_per_sample=False)
        train = {"f": tf, "inputs": t_inputs}
    ctx = {"prefix": prefix, "P": prefix.upper(), "version": __version__, "f": f, "inputs": inputs,
           "outputs": outputs, "threads": program.options.max_threads, "train": train,
           "runtime_objects": [n[:-2] + ".o" for n in RUNTIME_FILES if n.endswith(".c")],
           "runtime_headers": [n for n in RUNTIME_FILES if n.endswith(".h")]}
    files = [
        (f"{prefix}.c", program.model_c),
        (f"{prefix}.h", program.model_h),
        (f"{prefix}_weights.bin", weights_blob(program, image)),
        ("main.c", env.get_template("main.c.j2").render(**ctx)),
        ("Makefile", env.get_template("Makefile.j2").render(**ctx)),
        ("README.txt", env.get_template("README.txt.j2").render(**ctx)),
        (MARKER, f"written by boldc {__version__} compile --name {prefix}; boldc compile --force may replace "
                 "this folder\n"),
    ]
    if train:
        files.append(("train_main.c", env.get_template("train_main.c.j2").render(**{**ctx, **train})))
    files += [(name, runtime_text(name)) for name in RUNTIME_FILES]
    _check_names(prefix, [name for name, _ in files], train is not None)
    try:
        _write_into_place(dict(files), out, parent)
    except OSError as exc:
        raise ArtefactError(f"{out}: cannot write the folder ({exc.strerror or exc})") from None
    return out


def export(module: Module, outdir: str | os.PathLike, *, name: str = "model", max_batch: int = 1,
           threads: int = 1, func: str = "forward", force: bool = False, params: dict | None = None,
           train: bool = False, fuse: bool = True) -> Path:
    """Generate C for ``module`` and write the standalone folder (see module doc).
    ``params`` overrides the module's tensors (e.g. a CompiledModel's current ones).
    With ``train`` the module must have @train_step (``boldc.backend.training``): it is
    emitted too, with the training example program. ``fuse``: fuse each layer with the
    elementwise ops after it first (on a copy), as ``boldc.compile`` does."""
    functions = (func,) if not train else tuple(dict.fromkeys((func, "forward", "train_step")))
    if fuse:
        from boldc.passes.fuse_epilogues import FuseEpilogues

        module = module.copy()
        FuseEpilogues(functions=list(functions)).run(module)
    program = generate(module, Options(name=name, max_batch=max_batch, max_threads=threads, functions=functions))
    return write_folder(program, program.params_image(params), outdir, func, force)
