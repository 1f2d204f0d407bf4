"""PNG metadata round trip (pngmeta.py): what `ddpm sample` and the web UI write is what they read back."""

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ddpm.pictures.pngmeta import png_bytes, read_png_metadata, save_png


def test_values_read_back_as_written_even_when_a_string_looks_like_json(tmp_path):
    meta = {"prompt": "5", "negative": "null", "other": "true", "greek": "μια ζέβρα", "seed": 5, "guidance": 3.0,
            "prompts": ["a cat", "[1]"], "empty": ""}
    image = Image.new("L", (4, 4), 128)
    assert read_png_metadata(save_png(image, tmp_path / "a.png", meta)) == meta
    assert read_png_metadata(png_bytes(image, meta)) == meta
    with Image.open(tmp_path / "a.png") as im:  # the pixels are untouched
        assert im.tobytes() == bytes([128] * 16)


def test_chunks_of_other_programs_stay_plain_text(tmp_path):
    info = PngInfo()
    info.add_text("Comment", "made elsewhere {not json")
    Image.new("L", (2, 2)).save(tmp_path / "b.png", pnginfo=info)
    assert read_png_metadata(tmp_path / "b.png") == {"Comment": "made elsewhere {not json"}


def test_a_string_that_is_not_valid_unicode_is_written_and_reads_back(tmp_path):
    """A lone surrogate (what a JSON request's "\\ud800" decodes to) cannot be UTF-8; the PNG is written anyway."""
    meta = {"prompt": "\ud800 a cat", "drawn": ["cat", "\udce9"], "greek": "ζέβρα"}
    image = Image.new("L", (4, 4), 128)
    assert read_png_metadata(png_bytes(image, meta)) == meta
    assert read_png_metadata(save_png(image, tmp_path / "a.png", meta)) == meta
