"""Leaf primitives that import nothing else of ddpm: user errors (errors.py), atomic files and the safetensors reader
(files.py), numbers and JSON from text (parse.py), names from the OS as text (ostext.py), where a command may write
(outputs.py), seeds (seeding.py), pixel ranges (pixels.py), a network checked against its file (weights.py)."""
