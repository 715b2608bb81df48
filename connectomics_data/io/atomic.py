"""Write-then-rename: a crash never leaves a half-written output under its final name."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import OutputError


def _errno(err: BaseException) -> int | None:
    """The errno of a failed write; h5py and torch put it only in the text ('errno = 28')."""
    code = getattr(err, "errno", None)
    if code is None:
        found = re.search(r"errno = (\d+)", str(err))
        code = int(found.group(1)) if found else None
    return code


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _describe_os_error(err: OSError, path: Path) -> str:
    code = _errno(err)
    if code == errno.ENOSPC:
        return f"no space left on the device while writing {path}"
    if code == errno.EFBIG:
        return f"cannot write {path}: file too large (file size limit reached)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: permission denied or read-only file system"
    return f"cannot write {path}: {err.strerror or err}"


_WRITE_FAILURE_MARKS = ("errno = ", "file write failed", "unexpected pos")
"""h5py (at file close) and torch.save report a failed write (disk full, file size limit) as a
RuntimeError carrying one of these phrases instead of an OSError."""


def _write_failure(err: RuntimeError, path: Path) -> str | None:
    """The message for a RuntimeError that reports a failed write, else None."""
    text = str(err)
    if not any(mark in text for mark in _WRITE_FAILURE_MARKS):
        return None
    if _errno(err) in (errno.ENOSPC, errno.EFBIG):
        return _describe_os_error(OSError(_errno(err), text), path)
    return f"cannot write {path}: the write failed, is the disk full? ({text.splitlines()[0][:120]})"


def ensure_directory(path: str | os.PathLike, what: str = "output directory",
                     output: str | os.PathLike | None = None) -> Path:
    """Create the directory ``path`` and its parents if needed; return it as a ``Path``.

    Every place that creates an output directory goes through here, so a path below an existing
    *file* (``out.h5/preds``), a file where the directory should be, or a read-only parent gives
    one :class:`OutputError` naming ``path`` (and the file in the way) instead of a traceback.

    Args:
        what: what the directory is for, used in the message ('output directory', 'log
            directory', ...).
        output: the file to be written there, named in the message when given.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        return p
    except OSError as err:
        head = f"cannot create the {what} {p}" + (f" for {output}" if output is not None else "")
        # Path.exists() is False below a file (ENOTDIR), so the first existing non-directory
        # among path and its ancestors is the file in the way
        blocker = next((a for a in (p, *p.parents) if a.exists() and not a.is_dir()), None)
        if blocker is not None:
            detail = "it exists as a file" if blocker == p else f"{blocker} is a file, not a directory"
            raise OutputError(f"{head}: {detail}") from err
        raise OutputError(f"{head}: {_describe_os_error(err, p).split(': ', 1)[-1]}") from err


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it to ``path``, on failure remove it.

    The temporary name lives in the same directory (same file system), so the final
    ``os.replace`` is atomic: readers see either the old file or the complete new one. For
    directory outputs (zarr stores) pass ``is_dir=True``; an existing directory at ``path`` is
    replaced only after the new one is complete.

    Raises:
        OutputError: the directory is not writable or the disk is full; the message names
            ``path``. Earlier outputs are left untouched.
    """
    final = Path(path)
    parent = final.parent if str(final.parent) else Path(".")
    ensure_directory(parent, "directory", output=final)
    try:
        if is_dir:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent))
            os.chmod(tmp, 0o777 & ~_umask())
        else:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=parent)
            os.close(fd)
            tmp = Path(tmp_name)
            # mkstemp makes 0600 files; outputs get the usual permissions (0666 minus umask)
            os.chmod(tmp, 0o666 & ~_umask())
    except OSError as err:
        raise OutputError(_describe_os_error(err, final)) from err
    try:
        yield tmp
        if is_dir:
            if final.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=parent))
                old.rmdir()
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        else:
            os.replace(tmp, final)
    except OSError as err:
        _remove(tmp)
        raise OutputError(_describe_os_error(err, final)) from err
    except RuntimeError as err:
        _remove(tmp)
        message = _write_failure(err, final)
        if message is None:
            raise
        raise OutputError(message) from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
