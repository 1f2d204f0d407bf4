"""Find the images of a folder dataset: classes, aliases, captions and the files' identity (size, mtime).

Layouts:
  ROOT/<class>/**/<image>            one subfolder per class (the Animals-10 layout); images anywhere below it
  ROOT/**/metadata.jsonl             optional captions, Hugging Face imagefolder style: one JSON object a line,
                                     {"file_name": "<path relative to this metadata.jsonl>", "text": str | [str]}
  ROOT/<image> + metadata.jsonl      a captioned folder without classes: one class named after ROOT
Class names: a folder name from Animals-10 (Italian) is translated (cane -> dog) and keeps its Italian name as an
alias; any other name is used as is, made text here (common/ostext.as_text: a byte that is not UTF-8 becomes \\xNN), so
that the name printed, stored in the checkpoint and the PNGs, and matched against prompts is one string everywhere.
Classes are ordered by their final name, so the order is stable.
Decoding happens later (cache.py); here only `os.stat` is called, which finds empty and unreadable files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.common.parse import json_value

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
METADATA = "metadata.jsonl"
ANIMALS10 = {  # Kaggle "Animals-10" folder names (Italian) -> English
    "cane": "dog", "cavallo": "horse", "elefante": "elephant", "farfalla": "butterfly", "gallina": "chicken",
    "gatto": "cat", "mucca": "cow", "pecora": "sheep", "ragno": "spider", "scoiattolo": "squirrel",
}


@dataclass
class FileEntry:
    path: Path
    label: int
    size: int  # bytes
    mtime_ns: int
    captions: list[str] = field(default_factory=list)


@dataclass
class FolderIndex:
    """What a folder holds before decoding: candidate files (sorted by class, then path), and files already known
    to be unusable with the reason."""

    root: Path
    class_names: list[str]
    aliases: dict[str, list[str]]  # English class name -> the folder names it came from, e.g. {"dog": ["cane"]}
    files: list[FileEntry]
    skipped: list[tuple[str, str]]  # (path, reason)
    captioned: bool


def class_name(folder: str) -> str:
    """The class a folder's name (as listed by the OS, possibly surrogate-escaped) stands for (see the module doc)."""
    text = as_text(folder)
    return ANIMALS10.get(text.lower(), text)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _image_paths(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if _is_image(p) and not p.is_dir())


def read_captions(root: Path) -> dict[Path, list[str]]:
    """Every metadata.jsonl under root -> {absolute image path: [captions]}. A malformed line or a file that is not
    UTF-8 is a one-line UserError."""
    captions: dict[Path, list[str]] = {}
    for meta in sorted(root.rglob(METADATA)):
        try:
            lines = meta.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise UserError(f"{meta} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
        for n, line in enumerate(lines, 1):
            if line.strip():
                name, texts = _caption_row(line, f"{meta} line {n}")
                captions[(meta.parent / name).resolve()] = texts
    return captions


def _caption_row(line: str, where: str) -> tuple[str, list[str]]:
    """One metadata.jsonl line -> (file_name, captions); a one-line UserError naming `where` for anything else."""
    try:
        row = json_value(line)
        name, text = row["file_name"], row.get("text", [])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"{where} is not a JSON object with file_name and text; fix or remove that line") from None
    if not isinstance(name, str) or not name or not _is_file_name(name):
        raise UserError(f"{where}: file_name must be a non-empty string (a path relative to metadata.jsonl), got "
                        f"{json.dumps(name)[:80]}")
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise UserError(f"{where}: text must be a string or a list of strings, got {json.dumps(text)[:60]}")
    return name, texts


def _is_file_name(name: str) -> bool:
    """Whether `name` can name a file: no NUL, and no lone surrogate (JSON "\\ud800"), which no file system takes."""
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        return False
    return "\0" not in name


def _stat(p: Path, label: int, captions: dict[Path, list[str]], skipped: list[tuple[str, str]]) -> FileEntry | None:
    try:
        st = p.stat()
        if not os.access(p, os.R_OK):
            raise PermissionError("permission denied")
    except OSError as e:
        skipped.append((str(p), f"unreadable ({e.strerror or e})"))
        return None
    if st.st_size == 0:
        skipped.append((str(p), "empty file (0 bytes)"))
        return None
    return FileEntry(p, label, st.st_size, st.st_mtime_ns, captions.get(p.resolve(), []))


def scan_folder(root: Path) -> FolderIndex:
    """Index a dataset folder (see the module doc); missing folder or no classes is a UserError."""
    if not root.is_dir():
        raise UserError(f"data folder {root} does not exist; pass a folder with one subfolder per class or builtin:animal-shapes")
    captions = read_captions(root)
    class_dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if class_dirs:
        names = {d: class_name(d.name) for d in class_dirs}
        if len(set(names.values())) < len(names):
            raise UserError(f"two class folders under {root} map to the same class ({sorted(names.values())}); rename one")
        class_dirs.sort(key=lambda d: names[d])
        groups = [(names[d], _image_paths(d, recursive=True)) for d in class_dirs]
        aliases = {names[d]: [as_text(d.name)] for d in class_dirs if names[d] != as_text(d.name)}
    elif captions and _image_paths(root, recursive=False):
        groups, aliases = [(as_text(root.name) or "all", _image_paths(root, recursive=False))], {}
    else:
        raise UserError(f"{root} has no class subfolders; put each class's images in a subfolder named after it")
    files: list[FileEntry] = []
    skipped: list[tuple[str, str]] = []
    for label, (_, paths) in enumerate(groups):
        files.extend(e for p in paths if (e := _stat(p, label, captions, skipped)) is not None)
    return FolderIndex(root, [n for n, _ in groups], aliases, files, skipped, captioned=bool(captions))
