"""Building generated C: flags per target, the cffi extension and its cache.

The extension is built by cffi (API mode) from the generated model.c and the
runtime sources, and cached under ``$BOLDC_CACHE_DIR`` (default
``$XDG_CACHE_HOME/boldc`` or ``~/.cache/boldc``) in a directory named by a hash of
the C sources, the flags, the compiler (command and version), the compiler variables of
the environment, the Python/cffi versions and, for -march=native, this CPU's ISA macros. A cached
build is reused by every process; a build happens in a temp directory renamed into
place, so a killed build never leaves a half-written cache entry.

A missing C compiler (or missing Python headers) is a user error; a compiler error
on generated code is a bug in boldc and is raised with the compiler's output.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from boldc.resources import read_text

# The runtime: the API header, the drivers, and the ISA layer (bd_isa.h selects one ISA
# from the compiler's target macros; every bd_isa_<isa>.c is built, and only the
# selected one has a body), docs/backend.md "The ISA layer".
RUNTIME_FILES = ("boldc_rt.h", "bd_boolean.c", "bd_float.c", "bd_gemm.h", "bd_gemm.c", "bd_grad.c", "bd_train.c",
                 "bd_ckpt.c", "bd_util.c", "bd_signal.c", "bd_norm.c", "bd_isa.h", "bd_isa_portable.c",
                 "bd_isa_avx512.c", "bd_isa_amx.c", "bd_isa_avx2.c", "bd_isa_neon.c")
RUNTIME_SOURCES = tuple(f for f in RUNTIME_FILES if f.endswith(".c"))

# Target instruction sets: the flags decide which ISA bd_isa.h selects (docs/backend.md,
# "The ISA layer"). "native": everything this machine has (the best kernels it runs:
# AVX-512 VPOPCNTDQ + VNNI, with the AMX tiles for the integer GEMMs where the CPU has them,
# else AVX2, else NEON on aarch64, else portable); "avx512", "amx" (AVX-512 and the tiles),
# "avx2": those kernels (the CPU must have them: check_isa); "neon": the NEON kernels, which need an
# aarch64 compiler (they are in its base ISA; on another machine, export the C folder and
# cross-compile it); "portable": the plain C kernels on any target (-DBD_NO_SIMD).
ISA_FLAGS = {
    "native": ["-march=native"],
    "portable": ["-DBD_NO_SIMD"],
    "avx512": ["-mavx2", "-mfma", "-mpopcnt", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq",
               "-mavx512vnni"],
    "amx": ["-mavx2", "-mfma", "-mpopcnt", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vpopcntdq",
            "-mavx512vnni", "-mamx-tile", "-mamx-int8"],
    "avx2": ["-mavx2", "-mfma", "-mpopcnt"],
    "neon": [],
}
# The kernels (BD_SIMD_NAME, build_info's "simd=") each named isa must select.
SIMD_PATHS = {"portable": "portable", "avx512": "avx512-vpopcntdq", "amx": "avx512-amx", "avx2": "avx2",
              "neon": "neon"}
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


@cache
def _predefined(cc: str, flags: tuple[str, ...]) -> frozenset[str] | None:
    """The macros the compiler predefines with these flags, or None if it refuses them."""
    try:
        out = subprocess.run(cc.split() + list(flags) + ["-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return frozenset(line.split()[1] for line in out.stdout.splitlines() if line.startswith("#define "))


def simd_path(isa: str, cc: str | None = None) -> str | None:
    """The kernels bd_isa.h selects for ``isa``'s flags with this compiler (its BD_SIMD_NAME,
    as build_info reports it: "avx512-vpopcntdq", "avx2", "neon", "portable"); None when
    the compiler refuses the flags."""
    return kernels_selected(tuple(ISA_FLAGS[isa]), cc or find_compiler())


@cache
def kernels_selected(flags: tuple[str, ...], cc: str) -> str | None:
    """The BD_SIMD_NAME that bd_isa.h selects with these compiler flags (e.g. an exported
    Makefile's ARCH), found by the preprocessor alone; None when the compiler refuses them."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("boldc_rt.h", "bd_isa.h"):
            Path(tmp, name).write_text(runtime_text(name))
        Path(tmp, "name.c").write_text('#include "bd_isa.h"\nBD_SIMD_NAME\n')
        try:
            out = subprocess.run(cc.split() + list(flags) + ["-E", "-P", "name.c"], cwd=tmp, capture_output=True,
                                 text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[-1].strip('"') if out.returncode == 0 and lines else None


def check_isa(isa: str, cc: str | None = None) -> None:
    """A BoldcError unless the kernels ``isa`` names can be built by this compiler and run
    on this machine ("native" always can: it is what the machine has)."""
    if isa not in ISA_FLAGS:
        raise BoldcError(f"unknown isa '{isa}' (choose from {', '.join(ISA_FLAGS)})")
    if isa == "native":
        return
    cc = cc or find_compiler()
    export = ("to build for another machine, export the C folder (boldc compile MODEL -o DIR) and run make "
              "there or with its cross compiler (docs/backend.md, \"Device export\")")
    got = simd_path(isa, cc)
    if got != SIMD_PATHS[isa]:
        raise BoldcError(f"isa '{isa}': the C compiler '{cc}' does not target it (it selects the {got or 'no'} "
                         f"kernels, not the {isa} ones); use isa='native', or {export}")
    machine_flags = tuple(f for f in ISA_FLAGS[isa] if f.startswith("-m"))
    wanted, base = _predefined(cc, machine_flags), _predefined(cc, ())
    native = _predefined(cc, ("-march=native",))
    lacking = sorted(wanted - base - native) if wanted and base and native else []
    if lacking:
        raise BoldcError(f"isa '{isa}': this machine's CPU lacks {', '.join(m.strip('_') for m in lacking)}, so "
                         f"the {isa} kernels cannot run here; use isa='native' (the {simd_path('native', cc)} "
                         f"kernels here), or {export}")


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
    """The text of runtime file ``name`` (installed, or the checkout's runtime/)."""
    return read_text("runtime", name)


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
    # -march=native means this CPU's instructions: a cache shared between machines (a network
    # home, a CI cache) must not hand AVX-512 code to an AVX2 machine
    host = sorted(_predefined(cc, ("-march=native",)) or ()) if "-march=native" in flags else []
    # the compiler command itself and the variables cffi's build passes to it change the binary too
    env = [f"{k}={os.environ.get(k, '')}" for k in ("CFLAGS", "CPPFLAGS", "LDFLAGS", "LDSHARED")]
    ident = "\0".join([model_c, model_h, cdef, wrapper, runtime, " ".join(flags), cc, compiler_identity(cc),
                       sys.version, cffi.__version__, " ".join(host), *env])
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
