"""SamplingConfig (diffusion/sampling.py): one default and one validation per sampling option, the steps resolved in
one place, and every entry point (CLI flags, API keywords, the web UI's requests, eval) built from it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import untrained_run

from ddpm.api import load_run
from ddpm.cli import build_parser
from ddpm.cli.commands import sampling_from_args
from ddpm.common.errors import UserError
from ddpm.diffusion.sampling import DEFAULT_STEPS, EVAL_SAMPLING, Sampler, SamplingConfig, Variance
from ddpm.serve.request import Limits, parse_request, request_defaults


@pytest.mark.parametrize("sampler,T,expected", [("ddpm", 1000, 50), ("ddim", 1000, 50), ("dpm++2m", 1000, 20),
                                                ("dpm++2m-sde", 1000, 20), ("ddpm", 30, 30), ("dpm++2m", 12, 12)])
def test_steps_none_is_the_samplers_default_at_most_T(sampler: str, T: int, expected: int) -> None:
    assert SamplingConfig(sampler=sampler).num_steps(T) == expected
    assert SamplingConfig(sampler=sampler).resolved(T, "class").steps == expected
    assert SamplingConfig(sampler=sampler, steps=7).num_steps(T) == 7


def test_more_steps_than_T_is_a_one_line_user_error() -> None:
    with pytest.raises(UserError, match="steps 101 is more than the model's 100 diffusion steps") as e:
        SamplingConfig(steps=101).num_steps(100)
    assert "\n" not in str(e.value)


def test_names_become_enums_and_back() -> None:
    c = SamplingConfig(sampler="dpm++2m-sde", variance="beta")
    assert c.sampler is Sampler.DPMPP_2M_SDE and c.variance is Variance.BETA
    assert DEFAULT_STEPS["dpm++2m-sde"] == DEFAULT_STEPS[Sampler.DPMPP_2M_SDE] == 20
    d = c.to_dict()
    assert d["sampler"] == "dpm++2m-sde" and type(d["sampler"]) is str and type(d["variance"]) is str
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize("bad,needle", [
    (dict(sampler="euler"), "unknown sampler 'euler'"), (dict(variance="large"), "unknown variance"),
    (dict(steps=0), "steps must be a whole number >= 1"), (dict(steps=2.5), "steps must be a whole number"),
    (dict(steps=True), "steps must be a whole number"), (dict(seed=-1), "seed must be a whole number >= 0"),
    (dict(batch_size=0), "batch size must be a whole number >= 1"), (dict(batch_size=2.5), "batch size"),
    (dict(guidance=float("nan")), "guidance must be a finite number"), (dict(guidance="3"), "guidance"),
    (dict(eta=-0.5), "eta must be a finite number from 0 to 1"), (dict(eta=1.5), "eta must be a finite number from 0"),
    (dict(eta=None), "eta"), (dict(seed=2**63), "seed must be a whole number >= 0 that fits in 64 bits"),
])
def test_bad_values_are_one_line_user_errors(bad: dict, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as e:
        SamplingConfig(**bad)
    assert "\n" not in str(e.value)


def test_numpy_integers_are_whole_numbers() -> None:
    c = SamplingConfig(steps=np.int32(5), seed=np.int64(3), batch_size=np.int64(2))
    assert (c.steps, c.seed, c.batch_size) == (5, 3, 2) and type(c.seed) is int


def test_with_options_changes_only_the_named_fields_and_refuses_unknown_names() -> None:
    base = SamplingConfig(guidance=5.0, seed=4)
    c = base.with_options(sampler="ddim", steps=10)
    assert (c.sampler, c.steps, c.guidance, c.seed) == (Sampler.DDIM, 10, 5.0, 4)
    with pytest.raises(UserError, match="unknown sampling option"):
        base.with_options(temperature=0.7)


def test_cli_flags_default_to_the_config_and_build_it_back() -> None:
    args = build_parser().parse_args(["sample", "--checkpoint", "RUN"])
    assert sampling_from_args(args) == SamplingConfig()
    args = build_parser().parse_args(["eval", "--checkpoint", "RUN"])
    assert sampling_from_args(args) == EVAL_SAMPLING
    args = build_parser().parse_args(["sample", "--checkpoint", "RUN", "--sampler", "ddim", "--steps", "9",
                                      "--guidance", "2", "--eta", "0.5", "--variance", "beta", "--seed", "3",
                                      "--batch-size", "5"])
    assert sampling_from_args(args) == SamplingConfig("ddim", 9, 2.0, 0.5, "beta", 3, 5)


def test_web_requests_take_the_chosen_samplers_default_steps() -> None:
    limits = Limits(max_steps=1000)
    assert parse_request({"prompt": "cat", "sampler": "dpm++2m"}, limits).sampling.steps == 20
    assert parse_request({"prompt": "cat", "sampler": "ddpm"}, limits).sampling.steps == 50
    assert parse_request({"prompt": "cat"}, Limits(max_steps=12)).sampling.steps == 12
    default = SamplingConfig().resolved(1000, "class")  # the web UI starts from `ddpm sample`'s default
    got = parse_request({"prompt": "cat"}, limits).sampling
    assert (got.sampler, got.steps, got.guidance) == (default.sampler, default.steps, default.guidance)
    assert request_defaults(limits)["steps"] == default.steps and request_defaults(limits)["sampler"] == "dpm++2m"


def test_guidance_none_is_the_default_of_the_models_conditioning() -> None:
    """Class models 3, text models 7 (docs/text.md, "Guidance for text models"); an unconditional model always 1;
    a weight that was asked for is kept."""
    assert SamplingConfig().guidance is None
    assert [SamplingConfig().resolved(1000, cond).guidance for cond in ("class", "text", "none")] == [3.0, 7.0, 1.0]
    assert [SamplingConfig(guidance=2.5).guidance_for(cond) for cond in ("class", "text", "none")] == [2.5, 2.5, 1.0]
    assert SamplingConfig(guidance=0).resolved(1000, "text").guidance == 0.0  # 0 (unconditional) is a weight, not None


def test_sampling_needs_a_resolved_guidance() -> None:
    from ddpm.diffusion.sampler import PerSampleNoise, sample
    from ddpm.diffusion.schedule import NoiseSchedule

    schedule = NoiseSchedule.create("linear", 10)
    with pytest.raises(ValueError, match="guidance"):
        sample(lambda x, t, c: torch.zeros_like(x), schedule, torch.zeros(1, dtype=torch.long), (1, 4, 4),
               PerSampleNoise(0, [0]), SamplingConfig(), null_id=1)


def test_web_requests_of_a_text_run_start_from_the_text_default() -> None:
    limits = Limits(max_steps=1000, cond="text")
    assert parse_request({"prompt": "a red circle"}, limits).sampling.guidance == 7.0
    assert parse_request({"prompt": "a red circle", "guidance": 2}, limits).sampling.guidance == 2.0
    assert request_defaults(limits)["guidance"] == 7.0 and request_defaults(Limits(max_steps=1000))["guidance"] == 3.0


def test_api_keywords_and_a_config_draw_the_same_pixels(tmp_path) -> None:
    run = load_run(untrained_run(tmp_path / "run"))
    by_keywords = run.sample(["cat"], n=2, sampler="ddim", steps=3, guidance=2.0, seed=5)
    by_config = run.sample(["cat"], n=2, sampling=SamplingConfig(sampler="ddim", steps=3, guidance=2.0, seed=5))
    overridden = run.sample(["cat"], n=2, sampling=SamplingConfig(sampler="ddim", steps=3, seed=5), guidance=2.0)
    assert torch.equal(by_keywords, by_config) and torch.equal(by_keywords, overridden)
    assert not torch.equal(by_keywords, run.sample(["cat"], n=2, sampler="ddim", steps=3, guidance=2.0, seed=6))


def test_provenance_records_the_resolved_options(tmp_path) -> None:
    run = load_run(untrained_run(tmp_path / "run"))
    meta = run.provenance(SamplingConfig(sampler="dpm++2m"), "RUN", prompts=["cat"])
    assert (meta["sampler"], meta["steps"], meta["guidance"], meta["prompts"]) == ("dpm++2m", 20, 3.0, ["cat"])
    assert "batch_size" not in meta and meta["checkpoint_step"] == run.step and meta["software"] == "ddpm"
