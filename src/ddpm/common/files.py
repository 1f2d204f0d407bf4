"""Atomic file writes and the one safetensors reader.

Guarantee of every writer here: after a crash (process killed, power lost), the final name holds either the old
complete file or the new complete file, never a partial one. The new content is written to a hidden temporary file
in the same folder (`.<name>.<pid>.tmp`, so processes writing the same name at once never share a file), fsynced,
renamed over the final name with os.replace (atomic on one file system), and the folder is fsynced so the rename
itself survives a crash. A writer that fails removes its temporary file; one that is killed leaves it behind, for
`remove_stale_temps` to delete: the next successful write of the same name does.

Reading: `read_safetensors` never unpickles anything. A pickle or torch.save file is refused by its first bytes
(`PickleRefused`), and every other failure (missing, unreadable, truncated, corrupt) is an `UnreadableFile` whose
`reason` is one line, so each caller can word its own one-line message.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

_TEMP_SUFFIX = re.compile(r"\.(\d+)\.tmp$")


class UnreadableFile(Exception):
    """A file that cannot be read as safetensors. `reason` is one line; `io_error` is True when the file itself could
    not be opened or read (missing, no permission, I/O error) rather than holding bad content."""

    def __init__(self, reason: str, io_error: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.io_error = io_error


class PickleRefused(UnreadableFile):
    """The file is a pickle or a torch.save zip; it was not unpickled (unpickling can run code)."""

    def __init__(self) -> None:
        super().__init__("a pickle / torch.save file; refused: ddpm never unpickles files (unpickling can run code)")


def temp_path(final: Path) -> Path:
    """The temporary name `atomic_path` writes `final` under: same folder, hidden, unique to this process."""
    final = Path(final)
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path in `final`'s folder for the caller to write; on normal exit make it `final` atomically.

    After a crash `final` holds either its old complete content or the new complete content, never a partial file.
    On normal exit the temporary file is fsynced, renamed over `final` (os.replace) and the folder fsynced. On an
    exception the temporary file is removed, `final` is left untouched, and the exception propagates.
    """
    final = Path(final)
    tmp = temp_path(final)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)
    remove_stale_temps(final.parent, glob.escape(final.name))  # left by an earlier writer of this name that was killed


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: after a crash `path` holds the old or the new bytes, never a part."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` atomically: after a crash `path` holds the old or the new text, never a part."""
    write_bytes_atomic(path, text.encode(encoding))


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path, pattern: str = "*") -> list[Path]:
    """Delete the temporary files `atomic_path` left in `folder` for final names matching `pattern` when their
    writer is no longer running (killed mid-write). A temporary file of a live process is never deleted.
    Returns the paths deleted."""
    removed = []
    for tmp in Path(folder).glob(f".{pattern}.*.tmp"):
        m = _TEMP_SUFFIX.search(tmp.name)
        if m and not _process_alive(int(m.group(1))):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists under another user
        return True
    return True


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save `tensors` (made contiguous, on the CPU) and `metadata` as a safetensors file, atomically: after a crash
    `path` holds the old complete file or the new complete file, never a partial one."""
    cpu = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file, without unpickling anything.

    Raises PickleRefused for a pickle / torch.save file (judged by its first bytes, before any parsing), and
    UnreadableFile with a one-line reason for any other failure.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise UnreadableFile(_one_line(e), io_error=True) from None
    if _looks_like_pickle(head):
        raise PickleRefused()
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, f.metadata() or {}
    except OSError as e:
        raise UnreadableFile(_one_line(e), io_error=True) from None
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise UnreadableFile(_one_line(e)) from None


def _looks_like_pickle(head: bytes) -> bool:
    # safetensors: an 8-byte little-endian header length, then the JSON header's "{". Only a file that is not that
    # is judged by its first bytes (pickle protocol 2+ starts 0x80; torch.save's zip starts PK): a header length
    # whose low byte is 0x80 is a valid safetensors file, not a pickle.
    if head[8:9] == b"{":
        return False
    return head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
