"""Turn the npm package `emoji-datasource-twitter` (Twemoji, graphics CC-BY 4.0) into a captioned training folder.

    cd /tmp && npm pack emoji-datasource-twitter          # emoji-datasource-twitter-16.0.0.tgz, 62 MB
    python examples/twemoji/prepare.py /tmp/emoji-datasource-twitter-16.0.0.tgz ~/data/twemoji
    ddpm data inspect ~/data/twemoji --image-size 32
    ddpm train --data ~/data/twemoji --cond text --out runs/twemoji
    python examples/twemoji/prepare.py TARBALL ~/data/twemoji-sub --categories symbols smileys_and_emotion

Writes OUT/<category>/<code points>.png (the package's 64 px RGBA PNGs, one per emoji, without skin-tone variants
and without the five skin-tone swatches of the Component category), OUT/metadata.jsonl with each emoji's captions
(its name, its short names, "<name> emoji", "<category>: <name>", lower case) and OUT/ATTRIBUTION.txt. The
categories are the classes (`smileys_and_emotion`, `animals_and_nature`, ...), so `ddpm classifier train` learns
them. `--categories` keeps only the named ones (their folder names): the hearts are in smileys_and_emotion, the
large circles and squares in symbols, so these two (393 emoji) show each of those five times as often as the
full set does: in 4,000 steps a tiny text model learns their colour words (docs/text.md). Nothing is downloaded
here and no image is committed to this repository: the tarball is the input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from ddpm.common.errors import UserError
from ddpm.common.files import write_text_atomic
from ddpm.common.outputs import check_output

IMAGES = "package/img/twitter/64/"
SKIPPED_CATEGORIES = {"Component"}  # skin-tone swatches, not pictures of anything
IMAGE_NAME = re.compile(r"[0-9a-f]+(-[0-9a-f]+)*\.png")
ATTRIBUTION = ("Twemoji graphics by Twitter, Inc and other contributors, licensed under CC-BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/), from the npm package emoji-datasource-twitter "
               "(iamcal/emoji-data, MIT).\n")


def category_folder(category: str) -> str:
    """'Smileys & Emotion' -> 'smileys_and_emotion' (a class name; underscores read as spaces in captions)."""
    return re.sub(r"[^a-z0-9]+", "_", category.lower().replace("&", "and")).strip("_")


def emoji_captions(entry: dict) -> list[str]:
    """The captions of one emoji.json entry, lower case, without repeats, the full name first."""
    name = entry["name"].lower()
    shorts = [s.replace("_", " ").replace("-", " ") for s in entry.get("short_names") or [entry["short_name"]]]
    return list(dict.fromkeys([name, *shorts, f"{name} emoji", f"{entry['category'].lower()}: {name}"]))


def prepare(tarball: Path, out: Path, force: bool = False, categories: Sequence[str] = ()) -> int:
    """Write the folder (see the module doc); returns the number of images written. `categories`: the folder
    names to keep (all when empty)."""
    if not tarball.is_file():
        raise UserError(f"{tarball} does not exist; fetch it with: npm pack emoji-datasource-twitter")
    check_output(out, "OUT", folder=True, force=force, protected=[tarball])
    try:
        tar = tarfile.open(tarball, "r:gz")
        entries = json.load(tar.extractfile("package/emoji.json"))  # type: ignore[arg-type]
    except (tarfile.TarError, KeyError, OSError, ValueError) as e:
        raise UserError(f"{tarball} is not an emoji-datasource-twitter package ({e})") from None
    wanted = {IMAGES + e["image"]: e for e in entries
              if e["category"] not in SKIPPED_CATEGORIES and IMAGE_NAME.fullmatch(e.get("image", ""))}
    known = sorted({category_folder(e["category"]) for e in wanted.values()})
    unknown = [c for c in categories if c not in known]
    if unknown:
        raise UserError(f"unknown --categories {', '.join(unknown)}; this package's are: {', '.join(known)}")
    if categories:
        wanted = {name: e for name, e in wanted.items() if category_folder(e["category"]) in categories}
    found: dict[str, str] = {}  # image member -> the path written, relative to out
    with tar:
        for member in tar:  # one pass in the archive's order: a gzip stream cannot seek back cheaply
            entry = wanted.get(member.name)
            if entry is None or not member.isfile():
                continue
            rel = f"{category_folder(entry['category'])}/{entry['image']}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]
            found[member.name] = rel
    lines = [json.dumps({"file_name": found[name], "text": emoji_captions(entry)}, ensure_ascii=False)
             for name, entry in sorted(wanted.items(), key=lambda kv: kv[1]["sort_order"]) if name in found]
    write_text_atomic(out / "metadata.jsonl", "\n".join(lines) + "\n")
    write_text_atomic(out / "ATTRIBUTION.txt", ATTRIBUTION)
    return len(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("tarball", type=Path, help="emoji-datasource-twitter-<version>.tgz from npm pack")
    p.add_argument("out", type=Path, help="the folder to write")
    p.add_argument("--force", action="store_true", help="write into a folder that already holds files")
    p.add_argument("--categories", nargs="+", default=(), metavar="NAME",
                   help="keep only these categories, by folder name (e.g. symbols smileys_and_emotion)")
    args = p.parse_args(argv)
    try:
        n = prepare(args.tarball.expanduser(), args.out.expanduser(), args.force, args.categories)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{n} images and their captions in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
