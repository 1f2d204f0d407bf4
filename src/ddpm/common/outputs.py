"""The one rule for where a command may write (every output flag of `ddpm` goes through `check_output`).

- Never a file the command read, nor anything inside a folder it read (`protected`: the checkpoint, the run
  directory's own files, a data folder): not even with --force.
- A file output that names an existing folder, or a folder output that names an existing file, is an error; so is
  an output below a file (FILE/x.png), which no folder can be created for.
- An existing file, or an existing folder that holds files, is written over only with --force.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ddpm.common.errors import UserError


def check_output(path: Path, flag: str, *, folder: bool = False, force: bool = False,
                 protected: Iterable[Path] = ()) -> Path:
    """`path` (user-expanded) when the command may write it (see the module doc), else a one-line UserError naming
    `flag`. Creates nothing."""
    path = Path(path).expanduser()
    target = path.resolve()
    for read in protected:
        read = Path(read).expanduser().resolve()
        if target == read or read in target.parents:
            raise UserError(f"{flag} {path} would overwrite {read}, which this command reads; choose another path")
    below = next((p for p in path.parents if p.exists()), None)
    if below is not None and not below.is_dir():  # checked before sampling or training, not when writing at the end
        raise UserError(f"{flag} {path} is below {below}, which is a file; choose another path")
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give a folder")
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name")
    if not force and (path.is_file() or (path.is_dir() and any(path.iterdir()))):
        what = "a folder that holds files" if folder else "an existing file"
        raise UserError(f"{flag} {path} is {what}; choose another path or add --force to replace")
    return path
