"""The Python API for drawing from a trained run, mirroring `ddpm sample`, for notebooks and scripts.

    import ddpm
    run = ddpm.load_run("runs/demo")                      # a run directory or a checkpoint file
    x = run.sample(["zebra", "cat"], n=4, sampler="ddpm", steps=50, guidance=3.0, seed=0)  # (8, C, H, W) in [-1, 1]
    images = run.sample_pil("zebra", n=4)                 # list of PIL images
    out = run.sample_prompts(["a zebra grazing", "a puppy"], n=4, negative="a horse")  # free text, one row each
    out.images, out.rows                                  # (8, C, H, W); what each prompt resolved to

Sampling options come as one `SamplingConfig` (diffusion/sampling.py) or as its field names as keywords
(`sampler=`, `steps=`, `guidance=`, `eta=`, `variance=`, `seed=`, `batch_size=`), which change that config.
Training a run is launch.py (`ddpm.train_run`).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from ddpm.common.errors import UserError
from ddpm.common.pixels import tensor_to_pil
from ddpm.common.weights import build_with_weights
from ddpm.config import CONFIG_NAME, RunConfig
from ddpm.diffusion.forward import EpsModel, as_eps_model
from ddpm.diffusion.guidance import NegativeAsNull
from ddpm.diffusion.sampler import PerSampleNoise, StepCallback, sample
from ddpm.diffusion.sampling import SamplingConfig
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.network.unet import UNet
from ddpm.text.captions import class_captions
from ddpm.text.prompts import (
    PromptRow,
    Vocabulary,
    class_prompt_embeddings,
    resolve_class,
    resolve_negative,
    resolve_prompts,
)
from ddpm.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ddpm.training.snapshot import SNAPSHOT_DIR

ClassSpec = str | int
MAX_IMAGES_PER_PROMPT = 100_000  # a grid row 100,000 images wide; more cannot be held, let alone looked at


def images_per_prompt_check(n: object) -> str | None:
    """None when `n` is a number of images per prompt `sample` and `sample_prompts` take (`ddpm sample -n`), else what
    was expected."""
    ok = not isinstance(n, bool) and isinstance(n, numbers.Integral) and 1 <= n <= MAX_IMAGES_PER_PROMPT
    return None if ok else f"a whole number from 1 to {MAX_IMAGES_PER_PROMPT:,}"


def _check_images_per_prompt(n: object) -> None:
    if images_per_prompt_check(n):
        raise UserError(f"-n must be {images_per_prompt_check(n)}, got {n!r}")


@dataclass
class PromptSamples:
    images: torch.Tensor  # (rows * n, C, H, W) in [-1, 1], row-major: prompt 0 x n, prompt 1 x n, ...
    rows: list[PromptRow]
    negative: PromptRow | None = None


@dataclass
class TrainedModel:
    """A trained run: its config, network (EMA weights by default), schedule and class names."""

    config: RunConfig
    model: UNet
    schedule: NoiseSchedule
    step: int
    device: torch.device
    path: Path | None = None  # the run directory, when loaded from one

    @property
    def eps_model(self) -> EpsModel:
        """The network as the samplers call it: eps(x_t, t, c), converted from v for a v-predicting run."""
        return as_eps_model(self.model, self.schedule, self.config.diffusion.prediction)

    @property
    def class_names(self) -> list[str]:
        return list(self.config.data.class_names)

    @property
    def conditioning(self) -> str:
        """What the network is conditioned on: class | text | none."""
        return self.config.model.cond

    @property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary(self.conditioning, self.class_names, self.config.data.aliases, self.run_captions,
                          self.config.model.text_tokens)

    def class_ids(self, classes: ClassSpec | Sequence[ClassSpec] | None) -> list[int]:
        """None means every class in order."""
        if classes is None:
            return list(range(len(self.class_names)))
        if isinstance(classes, (str, int)):
            classes = [classes]
        return [resolve_class(c, self.class_names, self.config.data.aliases) for c in classes]

    def run_captions(self) -> list[str]:
        """The unique training captions of a text-conditioned run (RUN/captions.json), else its class templates."""
        if self.path is not None and (self.path / "captions.json").is_file():
            return json.loads((self.path / "captions.json").read_text())
        return [c for name in self.class_names for c in class_captions(name)]

    def resolve_prompts(self, prompts: Sequence[str], strict: bool = False) -> tuple[torch.Tensor, list[PromptRow]]:
        """See text/prompts.resolve_prompts."""
        return resolve_prompts(prompts, self.vocabulary, strict)

    def resolve_negative(self, negative: str, strict: bool = False,
                         drawn: Sequence[PromptRow] = ()) -> tuple[torch.Tensor, PromptRow]:
        """See text/prompts.resolve_negative (`drawn`: the rows of the prompts it goes with)."""
        return resolve_negative(negative, self.vocabulary, strict, drawn)

    def sample(self, classes: ClassSpec | Sequence[ClassSpec] | None = None, n: int = 8,
               sampling: SamplingConfig | None = None, *, progress: Callable[[int], None] | None = None,
               callback: StepCallback | None = None, **options: Any) -> torch.Tensor:
        """n images per class, class-major: (len(classes) * n, C, H, W) float in [-1, 1].
        Image j of a class starts from noise seeded by (seed, j): it does not depend on batch_size, on n, or on
        which other classes are asked for, and image j of every class shares its noise (compare classes)."""
        _check_images_per_prompt(n)
        ids = self.class_ids(classes)
        cond = torch.tensor(ids).repeat_interleave(n)  # class-major: class 0 x n, class 1 x n, ...
        index = torch.arange(n).repeat(len(ids))  # image j of each class draws its noise from (seed, j)
        return self.sample_pairs(cond, index, sampling, progress=progress, callback=callback, **options)

    def sample_prompts(self, prompts: Sequence[str] | str | None, n: int = 8, sampling: SamplingConfig | None = None, *,
                       negative: str | None = None, strict: bool = False, progress: Callable[[int], None] | None = None,
                       callback: StepCallback | None = None, **options: Any) -> PromptSamples:
        """n images per prompt, one row each. Class-conditioned models map each prompt to a class (exact names,
        aliases and indices first, then by similarity); text-conditioned models encode it. `negative` replaces the
        unconditional branch of guidance: eps_neg + w (eps - eps_neg). prompts None: every class (class mode), one
        unconditional row (none); a text model needs prompts."""
        _check_images_per_prompt(n)
        config = (sampling or SamplingConfig()).with_options(**options)
        if isinstance(prompts, str):
            prompts = [prompts]
        if self.conditioning == "none":
            if prompts or negative:
                raise UserError("this model is unconditional (trained with --cond none); drop the prompts and --negative")
            cond, rows = torch.zeros(1, dtype=torch.long), [PromptRow("", "none", "unconditional")]
        elif not prompts:
            if self.conditioning == "text":
                raise UserError("a text-conditioned model needs a prompt, e.g. ddpm sample --checkpoint RUN \"a red "
                                "square\"")
            cond = torch.arange(len(self.class_names))
            rows = [PromptRow(c, "class", c, 1.0, [(c, 1.0)]) for c in self.class_names]
        else:
            cond, rows = self.resolve_prompts(list(prompts), strict)
        neg_cond, neg_row = (self.resolve_negative(negative, strict, rows if prompts else ()) if negative is not None
                             else (None, None))
        cond = cond.repeat_interleave(n, dim=0)
        index = torch.arange(n).repeat(len(rows))
        images = self.sample_pairs(cond, index, config, negative=neg_cond, progress=progress, callback=callback)
        return PromptSamples(images, rows, neg_row)

    def sample_pairs(self, cond: torch.Tensor, index: torch.Tensor, sampling: SamplingConfig | None = None, *,
                     negative: torch.Tensor | None = None, progress: Callable[[int], None] | None = None,
                     callback: StepCallback | None = None, **options: Any) -> torch.Tensor:
        """Image index[i] of condition cond[i], for each i: the same image `sample` gives for that (class, j) pair,
        so a subset of the pairs (one rank's share under torchrun) can be sampled on its own. cond: (N,) class ids,
        or text conditions (N, 384) / (N, 1 + text_tokens, 384) for a text model (text/condition.py; class ids there
        stand for the prompt "a <class name>").
        `negative`: a condition to guide away from (() class id or one text condition), in place of the unconditional
        branch (guidance.NegativeAsNull). progress(images) after each batch; callback(t, x_t, x0_hat) after each step
        of each batch (trajectory.py, progress bars, the web UI's previews)."""
        config = self.effective_sampling((sampling or SamplingConfig()).with_options(**options))
        if self.conditioning == "text" and cond.dim() == 1 and len(cond):
            cond = class_prompt_embeddings(self.class_names, cond, self.config.model.text_tokens)
        c = self.config.model
        if len(cond) == 0:
            return torch.empty(0, c.channels, c.image_size, c.image_size)
        model = self.eps_model if negative is None else NegativeAsNull(self.eps_model, self.model.null_id, negative)
        out = []
        for start in range(0, len(cond), config.batch_size):
            stop = min(start + config.batch_size, len(cond))
            x = sample(model, self.schedule, cond[start:stop], (c.channels, c.image_size, c.image_size),
                       PerSampleNoise(config.seed, index[start:stop].tolist()), config, null_id=self.model.null_id,
                       device=self.device, callback=callback)
            out.append(x.cpu())
            if progress is not None:
                progress(stop - start)
        return torch.cat(out)

    def sample_pil(self, classes: ClassSpec | Sequence[ClassSpec] | None = None, n: int = 8, **kwargs: Any) -> list[Image.Image]:
        """Like `sample`, as a list of PIL images."""
        return tensor_to_pil(self.sample(classes, n, **kwargs))

    def effective_sampling(self, sampling: SamplingConfig) -> SamplingConfig:
        """`sampling` as this run applies it: steps resolved for its T; guidance 1 for an unconditional model (both
        branches of guidance would be equal)."""
        sampling = sampling.resolved(self.schedule.num_steps)
        return replace(sampling, guidance=1.0) if self.conditioning == "none" else sampling

    def provenance(self, sampling: SamplingConfig, checkpoint: str, **fields: Any) -> dict[str, Any]:
        """The settings written into every PNG made from this run (`ddpm sample` and the web UI alike): `fields`
        (prompts, negative, ...), the sampling options with steps resolved, the checkpoint and its step."""
        options = self.effective_sampling(sampling).to_dict()
        del options["batch_size"]  # does not change the pictures
        return {**fields, **options, "checkpoint": checkpoint, "checkpoint_step": self.step, "cond": self.conditioning,
                "image_size": self.config.model.image_size, "software": "ddpm"}


def load_run(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> TrainedModel:
    """Rebuild a trained model from a run directory or checkpoint file, with no other information."""
    config, weights, ema_weights, step = load_checkpoint(path)
    state = ema_weights if use_ema and ema_weights else weights
    try:  # checked against its config before the network is given memory (common/weights.py)
        model = build_with_weights(lambda: UNet(config.model), state)
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise UserError(f"checkpoint {path} does not match its config ({first}); it is damaged or from another version") from None
    device = torch.device(device)
    model.to(device).eval().requires_grad_(False)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    run_dir = Path(path).expanduser()
    return TrainedModel(config, model, schedule, step, device, run_dir if run_dir.is_dir() else run_dir.parent)


def run_files(path: str | Path) -> list[Path]:
    """What no output may replace when reading the run at `path` (a run directory or a checkpoint file): the file
    itself and the run directory's own files and folders (common/outputs.check_output's `protected`)."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    own = [CHECKPOINT_NAME, CONFIG_NAME, "metrics.jsonl", "captions.json", SNAPSHOT_DIR, "tb", "best.safetensors",
           "samples", "index.html", "training_curve.png", "wandb", "wandb-run-id"]  # what training writes (watch.py)
    return [path, *(path.parent / name for name in own)]
