"""Property tests (Hypothesis) of the readers of what users type and files hold: each returns a valid value or
raises the project's one-line error (UserError; ValueError for the config readers, which resolve.py turns into
one), never any other exception.

    config.read_config_file, check_value, RunConfig.from_dict / validate, resolve.resolve_config
    data/folder.read_captions (metadata.jsonl)
    serve/request.parse_request (the web UI's JSON request)
    common/parse (whole numbers, numbers, JSON), text/prompts (prompts, class names and indices), common/ostext
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from ddpm.common.errors import UserError
from ddpm.common.parse import INT64_MAX, INT64_MIN, ascii_integer, ascii_real, json_value
from ddpm.config import SECTIONS, RunConfig, check_value, read_config_file

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON values, with the numbers JSON can spell that Python's floats cannot (NaN, inf, 10**400 as an integer)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**18, max_value=10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=10)
FIELDS = {name: [f.name for f in dataclasses.fields(kind)] for name, kind in SECTIONS.items()}


def one_line(e: BaseException) -> None:
    assert str(e) and "\n" not in str(e), repr(e)


@st.composite
def config_tables(draw) -> dict:
    """Tables shaped like a config file: mostly real sections and keys, with values valid or not."""
    table = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "extra"]), unique=True, max_size=4)):
        keys = st.sampled_from(FIELDS.get(section, ["x"])) | st.text(max_size=5)
        table[section] = draw(st.dictionaries(keys, json_values | st.integers(1, 64), max_size=4))
    if draw(st.booleans()):
        table["format_version"] = draw(scalars)
    return draw(st.just(table) | json_values)


# --- config ----------------------------------------------------------------------------------------------------------

@FAST
@given(section=st.sampled_from([*SECTIONS, "nope"]), name=st.sampled_from(sorted({k for v in FIELDS.values() for k in v})),
       value=json_values)
def test_check_value_answers_for_any_value(section, name, value):
    error = check_value(section, name, value)
    assert error is None or (isinstance(error, str) and "\n" not in error)
    if error is None:  # a value its check accepts builds a config (the model's shape rule aside)
        try:
            RunConfig.from_dict({section: {name: value}}).validate()
        except ValueError as e:
            assert "multiple of" in str(e), e


@FAST
@given(table=config_tables())
def test_run_config_from_any_table_is_a_config_or_one_value_error(table):
    try:
        config = RunConfig.from_dict(table)
    except ValueError as e:
        one_line(e)
        return
    config.validate()
    assert RunConfig.from_dict(json.loads(config.to_json())).to_dict() == config.to_dict()  # it round-trips


@SLOW
@given(content=st.binary(max_size=200) | config_tables().map(lambda t: json.dumps(t).encode()),
       suffix=st.sampled_from([".json", ".toml", ".txt"]))
@example(content=b"[" * 100_000, suffix=".json")
@example(content=b"a = " + b"[" * 100_000, suffix=".toml")
def test_read_config_file_returns_a_table_or_one_value_error(content, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"c{suffix}"
        path.write_bytes(content)
        try:
            table = read_config_file(path)
        except ValueError as e:
            one_line(e)
            return
    assert isinstance(table, dict)


@SLOW
@given(table=config_tables())
@example(table={"model": {"\n": 1}})  # found in CI: an unknown key's line break made the error two lines
@example(table={"\n": 1})  # found by make test: an unknown section's line break, the same
def test_resolve_config_gives_a_config_or_a_user_error(table):
    """resolve.py over any flags table; the data source stays the built-in set (a fuzzed path could be a real
    folder: "/" would be scanned)."""
    from ddpm.resolve import resolve_config

    assume(isinstance(table, dict))
    if isinstance(table.get("data"), dict):
        table["data"].pop("source", None)
    try:
        resolution = resolve_config(table)
    except UserError as e:
        one_line(e)
        return
    resolution.config.validate()


# --- metadata.jsonl --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def caption_root():
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "cls").mkdir()
        yield Path(folder)


line = (st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode())
        | st.builds(lambda name, text: json.dumps({"file_name": name, "text": text}).encode(),
                    st.text(max_size=12) | scalars, json_values))


@settings(FAST, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(line, max_size=4), where=st.sampled_from(["", "cls/"]))
def test_metadata_jsonl_gives_captions_or_one_user_error(caption_root, lines, where):
    from ddpm.data.folder import read_captions

    for old in caption_root.rglob("metadata.jsonl"):
        old.unlink()
    (caption_root / where / "metadata.jsonl").write_bytes(b"\n".join(lines))
    try:
        captions = read_captions(caption_root)
    except UserError as e:
        one_line(e)
        return
    assert all(isinstance(k, Path) and all(isinstance(t, str) for t in v) for k, v in captions.items())


# --- the web UI's request --------------------------------------------------------------------------------------------

REQUEST_FIELDS = ["prompt", "negative", "n", "sampler", "steps", "guidance", "seed"]
field_values = (json_values | st.sampled_from(["cat", "ddim", "dpm++2m", "7", "2.5", " 12 ", "²", "-1"])
                | st.integers(-5, 100) | st.floats(-5, 30))


@FAST
@given(payload=st.dictionaries(st.sampled_from(REQUEST_FIELDS) | st.text(max_size=4), field_values, max_size=5)
       | json_values)
def test_parse_request_gives_a_request_or_one_user_error(payload):
    from ddpm.serve.request import GenerateRequest, Limits, parse_request

    limits = Limits(max_steps=100)
    try:
        request = parse_request(payload, limits)
    except UserError as e:
        one_line(e)
        return
    assert isinstance(request, GenerateRequest) and request.prompt
    assert 1 <= request.n <= limits.max_images and 1 <= request.sampling.steps <= limits.max_steps
    assert 0 <= request.sampling.guidance <= limits.max_guidance and 0 <= request.sampling.seed <= INT64_MAX


def test_a_huge_integer_guidance_is_a_user_error():  # was an OverflowError (HTTP 500): {value:g} of 10**400
    from ddpm.serve.request import Limits, parse_request

    with pytest.raises(UserError):
        parse_request(json.loads('{"prompt": "cat", "guidance": 1' + "0" * 400 + "}"), Limits(max_steps=100))


def test_full_width_digits_are_no_guidance():  # float() took them; ddpm reads ASCII digits only
    from ddpm.serve.request import Limits, parse_request

    with pytest.raises(UserError):
        parse_request({"prompt": "cat", "guidance": "３"}, Limits(max_steps=100))


def test_an_unknown_field_with_a_line_break_is_a_one_line_error():
    from ddpm.serve.request import Limits, parse_request

    with pytest.raises(UserError) as e:
        parse_request({"prompt": "cat", "a\nb": 1}, Limits(max_steps=100))
    one_line(e.value)


# --- numbers, JSON, prompts, class indices, OS text ------------------------------------------------------------------

@FAST
@given(text=st.text(max_size=25) | st.integers().map(str) | st.floats().map(str))
@example(text=str(2**63))
@example(text=str(-(2**63)))
@example(text="３")
@example(text="1e999")
@example(text="nan")
@example(text="0\x1f")  # str.strip() takes the unit separator off; int() does not (found by make test)
def test_numbers_from_text(text):
    whole = ascii_integer(text)
    assert whole is None or (type(whole) is int and INT64_MIN <= whole <= INT64_MAX)
    if whole is not None:
        assert text.strip().isascii() and whole == int(text)
    real = ascii_real(text)
    assert real is None or (type(real) is float and not math.isnan(real) and text.strip().isascii())
    if real is not None and math.isfinite(real):
        assert real == float(text)


@FAST
@given(text=st.text(max_size=40) | json_values.map(json.dumps))
@example(text="[" * 100_000)
def test_json_value_is_a_value_or_one_value_error(text):
    try:
        json_value(text)
    except ValueError as e:
        one_line(e)


names = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique_by=str.lower)


@FAST
@given(spec=st.text(max_size=20) | st.integers(), class_names=names,
       aliases=st.dictionaries(st.text(max_size=6), st.lists(st.text(max_size=6), max_size=2), max_size=2))
@example(spec="²", class_names=["a", "b", "c"], aliases={})
@example(spec=str(2**63), class_names=["a"], aliases={})
def test_resolve_class_is_an_index_or_one_user_error(spec, class_names, aliases):
    from ddpm.text.prompts import resolve_class

    try:
        index = resolve_class(spec, class_names, aliases)
    except UserError as e:
        one_line(e)
        return
    assert 0 <= index < len(class_names)


@FAST
@given(text=st.text(max_size=60) | scalars)
def test_clean_prompt_is_printable_text_or_one_user_error(text):
    from ddpm.text.prompts import clean_prompt

    try:
        cleaned = clean_prompt(text)
    except UserError as e:
        one_line(e)
        return
    assert cleaned and cleaned == cleaned.strip() and "\n" not in cleaned
    cleaned.encode("utf-8")  # printable on a strict UTF-8 stdout, storable in a PNG


@FAST
@given(text=st.text() | st.binary(max_size=30).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_as_text_is_valid_printable_text_and_idempotent(text):
    from ddpm.common.ostext import as_text

    shown = as_text(text)
    shown.encode("utf-8")
    assert as_text(shown) == shown and not any(c in shown for c in "\n\r\t\x1b\x00")
    if text.isprintable():
        assert shown == text
