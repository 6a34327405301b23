"""Building generated C: flags per target, the cffi extension and its cache.

The extension is built by cffi (API mode) from the generated model.c and the
runtime sources, and cached under ``$BOLDC_CACHE_DIR`` (default
``$XDG_CACHE_HOME/boldc`` or ``~/.cache/boldc``) in a directory named by a hash of
the C sources, the flags, the compiler and the Python/cffi versions. A cached
build is reused by every process; a build happens in a temp directory renamed into
place, so a killed build never leaves a half-written cache entry.

A missing C compiler (or missing Python headers) is a user error; a compiler error
on generated code is a bug in boldc and is raised with the compiler's output.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from functools import cache
from pathlib import Path

from boldc.errors import BoldcError

RUNTIME_FILES = ("boldc_rt.h", "bd_boolean.c", "bd_float.c", "bd_grad.c", "bd_train.c", "bd_ckpt.c", "bd_util.c")
RUNTIME_SOURCES = tuple(f for f in RUNTIME_FILES if f.endswith(".c"))

# Target instruction sets. "native" lets the compiler use everything this machine has
# (the runtime then selects its AVX-512 VPOPCNTDQ kernels if present, else the portable
# kernels); "avx2" compiles the portable kernels for AVX2 + popcnt; "portable" adds no
# -m flag at all.
ISA_FLAGS = {
    "native": ["-march=native"],
    "portable": [],
    "avx512": ["-mavx2", "-mfma", "-mpopcnt", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq"],
    "avx2": ["-mavx2", "-mfma", "-mpopcnt"],
}
POPCOUNTS = ("builtin", "portable")
# No FP contraction (no fused multiply-add may merge the Boolean optimizer's three f32
# operations, docs/training.md; -std=c99 implies it for gcc, the flag says it for any
# compiler); an undeclared function is an error, never an implicit int (a wrong cdef
# would otherwise crash).
BASE_FLAGS = ["-std=c99", "-O3", "-ffp-contract=off", "-Werror=implicit-function-declaration"]
WARN_FLAGS = ["-Wall", "-Wextra", "-Werror"]


class BuildError(RuntimeError):
    """Generated C did not compile: a bug in boldc (the message holds the compiler output)."""


def c_flags(isa: str = "native", popcount: str = "builtin", openmp: bool = False, simd: bool = True) -> list[str]:
    """Compiler flags for a target (see ``boldc.compile``)."""
    if isa not in ISA_FLAGS:
        raise BoldcError(f"unknown isa '{isa}' (choose from {', '.join(ISA_FLAGS)})")
    if popcount not in POPCOUNTS:
        raise BoldcError(f"unknown popcount '{popcount}' (choose from {', '.join(POPCOUNTS)})")
    flags = BASE_FLAGS + ISA_FLAGS[isa]
    if popcount == "portable":
        flags.append("-DBD_PORTABLE_POPCOUNT")
    if not simd:
        flags.append("-DBD_NO_SIMD")
    if openmp:
        flags.append("-fopenmp")
    return flags


def cache_root() -> Path:
    env = os.environ.get("BOLDC_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "boldc"


def _cache_error(root: Path, given: bool, exc: OSError) -> BoldcError:
    """One line naming the cache folder, where it came from and what to do."""
    if given:
        source = "cache_dir"
    elif os.environ.get("BOLDC_CACHE_DIR"):
        source = "BOLDC_CACHE_DIR"
    else:
        source = "the default build cache (XDG_CACHE_HOME or ~/.cache)"
    return BoldcError(f"cannot write the build cache {root} ({source}): {exc.strerror or exc}; set "
                      "BOLDC_CACHE_DIR to a writable directory")


def find_compiler() -> str:
    """The C compiler cffi will use (CC, else Python's configured one), or a BoldcError."""
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc")
    exe = cc.split()[0]
    if shutil.which(exe) is None:
        raise BoldcError(f"no C compiler found (looked for '{exe}'): install gcc or clang, or set CC to one")
    return cc


@cache
def compiler_identity(cc: str) -> str:
    try:
        out = subprocess.run(cc.split() + ["--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.splitlines()[0] if out.stdout else cc
    except (OSError, subprocess.SubprocessError):
        return cc


def runtime_text(name: str) -> str:
    return importlib.resources.files("boldc.runtime").joinpath(name).read_text(encoding="utf-8")


def write_sources(directory: Path, prefix: str, model_c: str, model_h: str) -> list[Path]:
    """model.c/.h and the runtime into ``directory``; returns the .c files."""
    (directory / f"{prefix}.c").write_text(model_c)
    (directory / f"{prefix}.h").write_text(model_h)
    for name in RUNTIME_FILES:
        (directory / name).write_text(runtime_text(name))
    return [directory / f"{prefix}.c"] + [directory / n for n in RUNTIME_SOURCES]


@contextlib.contextmanager
def _captured_output(path: Path):
    """Send this process's stdout/stderr file descriptors to ``path`` (the compiler
    is a subprocess, so redirecting sys.stdout would not catch it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


_LOADED: dict[str, object] = {}


def build_extension(prefix: str, model_c: str, model_h: str, cdef: str, flags: list[str],
                    cache_dir: str | os.PathLike | None = None):
    """The compiled cffi module (``.ffi``, ``.lib``) for these sources, built or cached."""
    import cffi

    cc = find_compiler()
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        raise BoldcError(f"Python development headers are missing ({include}/Python.h): install the "
                         "python3-dev (or python3-devel) package")
    runtime = "".join(runtime_text(n) for n in RUNTIME_FILES)
    wrapper = f'#include "{prefix}.h"\n#include "boldc_rt.h"\n'
    ident = "\0".join([model_c, model_h, cdef, wrapper, runtime, " ".join(flags), compiler_identity(cc), sys.version,
                       cffi.__version__])
    key = hashlib.sha256(ident.encode()).hexdigest()[:24]
    modname = f"_boldc_{key}"
    if modname in _LOADED:
        return _LOADED[modname]
    root = Path(cache_dir) if cache_dir else cache_root()
    final = root / key
    so = _find_so(final, modname)
    if so is None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
        except OSError as exc:
            raise _cache_error(root, bool(cache_dir), exc) from None
        try:
            src = work / "src"
            src.mkdir()
            sources = write_sources(src, prefix, model_c, model_h)
            ffi = cffi.FFI()
            ffi.cdef(cdef)
            ffi.set_source(modname, wrapper, sources=[str(s) for s in sources],
                           include_dirs=[str(src)], extra_compile_args=flags,
                           extra_link_args=["-fopenmp"] if "-fopenmp" in flags else [])
            log = work / "build.log"
            try:
                with _captured_output(log):
                    built = ffi.compile(tmpdir=str(work / "out"), verbose=True)
            except Exception as exc:  # the compiler failed: a bug in the generated code
                text = log.read_text(errors="replace") if log.exists() else ""
                raise BuildError(f"building the generated C failed ({exc}); compiler output:\n{text[-6000:]}") from None
            package = work / "pkg"
            package.mkdir()
            shutil.copy2(built, package / Path(built).name)
            for s in sources:
                shutil.copy2(s, package / s.name)
            shutil.copy2(src / f"{prefix}.h", package / f"{prefix}.h")
            try:
                os.rename(package, final)
            except OSError:
                if _find_so(final, modname) is None:  # not a concurrent build that won: retry once
                    shutil.rmtree(final, ignore_errors=True)
                    os.rename(package, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        so = _find_so(final, modname)
        if so is None:
            raise BuildError(f"built extension missing from {final}")
    spec = importlib.util.spec_from_file_location(modname, so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _LOADED[modname] = mod
    return mod


def _find_so(directory: Path, modname: str) -> Path | None:
    if not directory.is_dir():
        return None
    for p in directory.iterdir():
        if p.name.startswith(modname + ".") and p.suffix in (".so", ".pyd", ".dylib"):
            return p
    return None
