"""examples/twemoji/prepare.py on a small tarball laid out like `npm pack emoji-datasource-twitter`: the folder it
writes is read by the ordinary folder path with the emoji's names as captions."""

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from ddpm.common.errors import UserError
from ddpm.data.folder import scan_folder

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "twemoji" / "prepare.py"
spec = importlib.util.spec_from_file_location("twemoji_prepare", SCRIPT)
prepare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare)

ENTRIES = [
    {"name": "RED HEART", "short_name": "heart", "short_names": ["heart"], "category": "Smileys & Emotion",
     "image": "2764-fe0f.png", "sort_order": 2},
    {"name": "GRINNING FACE", "short_name": "grinning", "short_names": ["grinning"], "category": "Smileys & Emotion",
     "image": "1f600.png", "sort_order": 1},
    {"name": "DOG FACE", "short_name": "dog", "short_names": ["dog", "puppy_face"], "category": "Animals & Nature",
     "image": "1f436.png", "sort_order": 3},
    {"name": "EMOJI MODIFIER FITZPATRICK TYPE-1-2", "short_name": "skin-tone-2", "category": "Component",
     "image": "1f3fb.png", "sort_order": 4},
    {"name": "NO PICTURE", "short_name": "none", "category": "Symbols", "image": "1f999.png", "sort_order": 5},
    {"name": "SNEAKY", "short_name": "x", "category": "Symbols", "image": "../../evil.png", "sort_order": 6},
]


def _tarball(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("package/emoji.json", json.dumps(ENTRIES).encode())
        for e in ENTRIES[:4]:
            png = io.BytesIO()
            Image.new("RGBA", (64, 64), (220, 40, 60, 255)).save(png, "PNG")
            add("package/img/twitter/64/" + e["image"], png.getvalue())
    return path


def test_writes_a_captioned_class_folder(tmp_path):
    out = tmp_path / "twemoji"
    assert prepare.main([str(_tarball(tmp_path / "t.tgz")), str(out)]) == 0
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [x["file_name"] for x in lines] == ["smileys_and_emotion/1f600.png", "smileys_and_emotion/2764-fe0f.png",
                                              "animals_and_nature/1f436.png"]  # emoji order; no swatch, no missing
    assert lines[2]["text"] == ["dog face", "dog", "puppy face", "dog face emoji", "animals & nature: dog face"]
    assert "CC-BY 4.0" in (out / "ATTRIBUTION.txt").read_text()
    assert not (tmp_path / "evil.png").exists()
    index = scan_folder(out)
    assert index.class_names == ["animals_and_nature", "smileys_and_emotion"] and index.captioned
    assert sorted(f.captions[0] for f in index.files) == ["dog face", "grinning face", "red heart"]


def test_refuses_a_missing_tarball_and_a_full_folder(tmp_path, capsys):
    assert prepare.main([str(tmp_path / "none.tgz"), str(tmp_path / "out")]) == 2
    assert "npm pack emoji-datasource-twitter" in capsys.readouterr().err
    tgz = _tarball(tmp_path / "t.tgz")
    assert prepare.main([str(tgz), str(tmp_path / "out")]) == 0
    assert prepare.main([str(tgz), str(tmp_path / "out")]) == 2
    assert prepare.main([str(tgz), str(tmp_path / "out"), "--force"]) == 0
    (tmp_path / "bad.tgz").write_bytes(b"not a tarball")
    with pytest.raises(UserError, match="not an emoji-datasource-twitter package"):
        prepare.prepare(tmp_path / "bad.tgz", tmp_path / "out2")


def test_categories_keeps_only_the_named_ones_and_refuses_an_unknown_one_before_writing(tmp_path, capsys):
    tgz = _tarball(tmp_path / "t.tgz")
    out = tmp_path / "sub"
    assert prepare.main([str(tgz), str(out), "--categories", "smileys_and_emotion"]) == 0
    lines = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [x["file_name"] for x in lines] == ["smileys_and_emotion/1f600.png", "smileys_and_emotion/2764-fe0f.png"]
    assert sorted(p.name for p in out.iterdir()) == ["ATTRIBUTION.txt", "metadata.jsonl", "smileys_and_emotion"]
    assert scan_folder(out).class_names == ["smileys_and_emotion"]
    capsys.readouterr()
    assert prepare.main([str(tgz), str(tmp_path / "bad"), "--categories", "symbols", "animals"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown --categories animals;" in err and "animals_and_nature" in err
    assert not (tmp_path / "bad").exists()
