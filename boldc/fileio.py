"""Reading and writing artefacts: atomic writes, and the ``.bir`` module file.

A ``.bir`` file is the module's text form with its ``resources`` section: one file
carries structure and weights, readable with any pager up to the resources.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from boldc.errors import ArtefactError
from boldc.ir.core import Module
from boldc.ir.parser import parse
from boldc.ir.printer import dumps


def check_output_file(path: Path) -> Path:
    """Refuse an output path that is a directory or whose directory does not exist (one
    line naming it); return the directory the file goes into."""
    path = Path(path)
    if path.is_dir():
        raise ArtefactError(f"{path}: is a directory; give a file name")
    return check_parent(path)


def check_parent(path: Path) -> Path:
    """The directory ``path`` goes into, after refusing one that does not exist or is a
    file (the message names the part of the path that is wrong)."""
    parent = path.parent if str(path.parent) else Path(".")
    if parent.is_dir():
        return parent
    above = parent
    while not above.exists() and above != above.parent:  # the deepest part that exists
        above = above.parent
    if above.exists() and not above.is_dir():
        raise ArtefactError(f"{path}: {above} is a file, not a directory")
    raise ArtefactError(f"{path}: directory {parent} does not exist")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same inode when both exist (hard links,
    symbolic links, ``./x`` and ``x``), else the same resolved path."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return _resolved(a) == _resolved(b)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symbolic link loop: compare the absolute path
        return Path(os.path.abspath(path))


def check_outside(folder: str | os.PathLike, option: str, inputs) -> None:
    """Refuse an output ``folder`` (replaced whole) that contains one of ``inputs``
    ((option, path) pairs, as ``check_distinct``)."""
    top = _resolved(Path(folder))
    for name, path in _given(inputs):
        if _resolved(path).is_relative_to(top):
            raise ArtefactError(f"{folder}: {option} holds the {name} input {path}, and writing the folder would "
                                f"replace it; choose another {option}")


def check_distinct(outputs, inputs, allowed: tuple[tuple[str, str], ...] = ()) -> None:
    """Refuse an output that is one of the inputs or another output (compared as files,
    see ``same_file``): it would replace the file before or while it is read.
    ``outputs`` and ``inputs`` are (option, path) pairs (a dict's items, or a list when
    an option repeats; a path may be None: not given); ``allowed`` lists (output,
    input) options that may name one file on purpose."""
    outs, ins = _given(outputs), _given(inputs)
    for i, (name, path) in enumerate(outs):
        for other, path2 in ins + outs[:i]:
            if (name, other) not in allowed and same_file(path, path2):
                what = "input" if (other, path2) in ins else "output"
                raise ArtefactError(f"{path}: {name} names the {other} {what}: an output must not replace an "
                                    f"input or another output; choose another {name}")


def _given(paths) -> list[tuple[str, Path]]:
    pairs = paths.items() if isinstance(paths, dict) else paths
    return [(name, Path(path)) for name, path in pairs if path is not None]


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over it:
    readers see the old file or the new one, never half of one."""
    path = Path(path)
    parent = check_output_file(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would have.
        os.fchmod(fd, _default_file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):  # disk full, permissions, a busy target: a user-facing error
            raise ArtefactError(f"{path}: cannot write: {exc.strerror or exc}") from None
        raise


def _default_file_mode() -> int:
    """0666 minus the process umask (os.umask can only be read by setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def read_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """The file's bytes; a missing or unreadable file is an ArtefactError naming ``what``."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ArtefactError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise ArtefactError(f"{path}: is a directory, not a {what}") from None
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot read: {exc.strerror}") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    path = Path(path)
    raw = read_bytes(path, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ArtefactError(f"{path}: not a boldc IR file (not UTF-8 text)") from None


def save(module: Module, path: str | os.PathLike) -> None:
    """Write the module (structure and weights) to ``path`` atomically."""
    atomic_write(path, dumps(module, weights=True))


def load(path: str | os.PathLike, verify: bool = True) -> Module:
    """Read a module written by ``save`` (or any IR text file)."""
    return parse(read_text(path, "IR file"), filename=str(path), verify=verify)
