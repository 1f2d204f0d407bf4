"""Text that came from the operating system (a folder name, a path, a command-line argument) as text that every
writer accepts: a terminal whose stdout is strict UTF-8, JSON, a PNG text chunk, safetensors metadata.

On Linux a file name is bytes. Python decodes the bytes that are not UTF-8 as lone surrogates (surrogateescape:
the folder b'chat\\xe9' is listed as 'chat\\udce9'), which round-trip to the file system but which no UTF-8 writer
accepts: printing one raises UnicodeEncodeError, and a PNG text chunk cannot hold one. So a name is made text once,
where it is read (a class name when the data folder is scanned, a prompt when it is cleaned), and that text is what
is printed, stored in the config and the checkpoint, written into PNGs and matched against prompts. Such a byte
becomes the four characters backslash, x and two hex digits (b'chat\\xe9' -> 'chat\\xe9'): what Python and
`ls --quoting-style=escape` show, and what a user can type back (quoted in a shell) to name the class. Control
characters are escaped the same way, so that a name is one line and cannot drive a terminal (an ESC sequence).
Valid text is returned unchanged, and the function is idempotent, so applying it twice is harmless.
"""

from __future__ import annotations

import unicodedata


def as_text(name: str) -> str:
    """`name` with each byte that was not UTF-8 (surrogate-escaped), each lone surrogate and each control character
    written as a backslash escape (\\xNN); printable text, backslashes included, is unchanged."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (e.g. JSON "\ud800"): its UTF-8-like bytes
        raw = name.encode("utf-8", "surrogatepass")
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)
