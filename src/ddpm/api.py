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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from ddpm.common.errors import UserError
from ddpm.common.pixels import tensor_to_pil, to_model_range
from ddpm.common.weights import build_with_weights
from ddpm.config import CONFIG_NAME, RunConfig
from ddpm.diffusion.forward import EpsModel, as_eps_model
from ddpm.diffusion.guidance import NegativeAsNull
from ddpm.data.inputs import Box, Source, box_mask, check_mask, file_sha256, read_input, read_mask
from ddpm.diffusion.editing import Guide, ImageToImage, Inpainting, StartFrom, frame_positions, resampling_plan, slerp
from ddpm.diffusion.sampler import PerSampleNoise, StepCallback, sample
from ddpm.diffusion.sampling import (
    DEFAULT_FRAMES,
    DEFAULT_JUMP,
    DEFAULT_REPEATS,
    DEFAULT_STRENGTH,
    INTERPOLATION_SAMPLING,
    SamplingConfig,
    check_strength,
)
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.network.unet import UNet
from ddpm.text.captions import class_captions
from ddpm.text.condition import TextLayout
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
ImageSpec = Source | str | torch.Tensor  # an image file, its bytes, or uint8 (K, C, S, S)
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
class EditSamples(PromptSamples):
    """What `edit` and `inpaint` drew (images: (K * n, C, H, W), one row per input), with the inputs as the model
    saw them ((K, C, H, W) in [-1, 1]), their SHA-256 and, for inpainting, the mask ((1, H, W) bool, True =
    generated)."""

    inputs: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    input_sha256: list[str] = field(default_factory=list)
    mask: torch.Tensor | None = None


@dataclass
class Morph:
    """What `interpolate` drew: frames (F, C, H, W) in [-1, 1] at positions u (0 to 1)."""

    frames: torch.Tensor
    positions: list[float]
    start: PromptRow
    end: PromptRow
    seed_a: int
    seed_b: int


class ClassMixture:
    """An EpsModel of a class network that takes cond as weights over its class table, (B, classes + 1) (the last
    column the null class), so the condition's embedding is sum_k w_k table_k (one-hot w: exactly the table's row).
    A row filled with the null id, as guidance makes it, is the null class. The network's table lookup is replaced
    by the mixed rows (a forward hook, for the one call)."""

    def __init__(self, model: EpsModel, net: UNet) -> None:
        self.model, self.net = model, net

    def __call__(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        null = self.net.null_id
        table = self.net.class_emb.weight  # (classes + 1, 4ch)
        is_null = (c == null).all(dim=1, keepdim=True)  # (B, 1)
        w = torch.where(is_null, class_mixture([null], null).to(c), c)  # (B, classes + 1)
        mixed = w.to(table) @ table  # (B, 4ch)
        hook = self.net.class_emb.register_forward_hook(lambda module, args, out: mixed.to(out.dtype))
        try:
            return self.model(x, t, torch.zeros(len(c), dtype=torch.long, device=c.device))
        finally:
            hook.remove()


def class_mixture(ids: Sequence[int], null_id: int) -> torch.Tensor:
    """Class ids -> (len(ids), null_id + 1) one-hot weights over a class table (null_id: its last row)."""
    return torch.nn.functional.one_hot(torch.tensor(ids, dtype=torch.long), null_id + 1).float()


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
                          TextLayout.of(self.config.model))

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
        cond, rows, neg_cond, neg_row = self.conditions(prompts, negative, strict)
        cond = cond.repeat_interleave(n, dim=0)
        index = torch.arange(n).repeat(len(rows))
        images = self.sample_pairs(cond, index, config, negative=neg_cond, progress=progress, callback=callback)
        return PromptSamples(images, rows, neg_row)

    def sample_each(self, prompts: Sequence[str], sampling: SamplingConfig | None = None, *,
                    progress: Callable[[int], None] | None = None, callback: StepCallback | None = None,
                    **options: Any) -> torch.Tensor:
        """One image per prompt, (N, C, S, S) in [-1, 1], image i from noise (seed, i): independent draws, for
        measuring. `sample_prompts(prompts, 1)` starts every prompt from the same noise (image 0), which compares
        prompts but makes a score over many prompts one noise's: over the 200 shapes-text evaluation prompts, that one
        noise set the background of most images and weighed on every shape (docs/text.md, "One noise per image, and
        more scenes of two objects")."""
        cond = self.conditions(list(prompts))[0]
        return self.sample_pairs(cond, torch.arange(len(cond)), sampling, progress=progress, callback=callback,
                                 **options)

    def conditions(self, prompts: Sequence[str] | str | None, negative: str | None = None, strict: bool = False
                   ) -> tuple[torch.Tensor, list[PromptRow], torch.Tensor | None, PromptRow | None]:
        """(cond, rows, negative cond, negative row) of `sample_prompts`: one condition per prompt (prompts None:
        every class, or the one unconditional row of a model trained with --cond none)."""
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
        return cond, rows, neg_cond, neg_row

    def sample_pairs(self, cond: torch.Tensor, index: torch.Tensor, sampling: SamplingConfig | None = None, *,
                     negative: torch.Tensor | None = None, progress: Callable[[int], None] | None = None,
                     callback: StepCallback | None = None, guide: Guide | None = None, **options: Any) -> torch.Tensor:
        """Image index[i] of condition cond[i], for each i: the same image `sample` gives for that (class, j) pair,
        so a subset of the pairs (one rank's share under torchrun) can be sampled on its own. cond: (N,) class ids,
        or text conditions (N, 384) / (N, 1 + text_tokens, 384) for a text model (text/condition.py; class ids there
        stand for the prompt "a <class name>").
        `negative`: a condition to guide away from (() class id or one text condition), in place of the unconditional
        branch (guidance.NegativeAsNull). progress(images) after each batch; callback(t, x_t, x0_hat) after each step
        of each batch (trajectory.py, progress bars, the web UI's previews). `guide`: an edit of every image
        (diffusion/editing.py: image to image, inpainting, given starting noise), one row per pair. cond may also be
        (N, classes + 1) weights over a class model's table (`class_mixture`), which interpolation mixes."""
        config = self.effective_sampling((sampling or SamplingConfig()).with_options(**options))
        if self.conditioning == "text" and cond.dim() == 1 and len(cond):
            cond = class_prompt_embeddings(self.class_names, cond, TextLayout.of(self.config.model))
        c = self.config.model
        if len(cond) == 0:
            return torch.empty(0, c.channels, c.image_size, c.image_size)
        model = self.eps_model
        if self.conditioning == "class" and cond.is_floating_point():  # weights over the class table
            model = ClassMixture(model, self.model)
            negative = None if negative is None else class_mixture([int(negative)], self.model.null_id)[0]
        if negative is not None:
            model = NegativeAsNull(model, self.model.null_id, negative)
        out = []
        for start in range(0, len(cond), config.batch_size):
            stop = min(start + config.batch_size, len(cond))
            x = sample(model, self.schedule, cond[start:stop], (c.channels, c.image_size, c.image_size),
                       PerSampleNoise(config.seed, index[start:stop].tolist()), config, null_id=self.model.null_id,
                       device=self.device, callback=callback, guide=guide.rows(start, stop) if guide else None)
            out.append(x.cpu())
            if progress is not None:
                progress(stop - start)
        return torch.cat(out)

    def read_image(self, image: Source) -> tuple[torch.Tensor, tuple[int, int]]:
        """An image file (or a file's bytes) as this run's training data saw it: (C, S, S) uint8, and its upright
        (width, height) (data/inputs.py)."""
        c = self.config.model
        return read_input(image, self.config.data, c.image_size, c.channels)

    def _inputs(self, images: ImageSpec | Sequence[Source]) -> tuple[torch.Tensor, list[str]]:
        """(K, C, S, S) uint8 of image files, bytes, or a uint8 tensor already of the model's shape, and each one's
        SHA-256 (of the file's bytes; of the pixels for a tensor)."""
        c = self.config.model
        if isinstance(images, torch.Tensor):
            x = images[None] if images.dim() == 3 else images
            if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (c.channels, c.image_size, c.image_size):
                raise UserError(f"images must be uint8 of shape (K, {c.channels}, {c.image_size}, {c.image_size}), "
                                f"got {x.dtype} {tuple(x.shape)}")
            return x, [file_sha256(bytes(u.contiguous().numpy().tobytes())) for u in x]
        sources = [images] if isinstance(images, (str, Path, bytes)) else list(images)
        if not sources:
            raise UserError("give at least one image")
        sources = [s if isinstance(s, bytes) else Path(s) for s in sources]
        return torch.stack([self.read_image(s)[0] for s in sources]), [file_sha256(s) for s in sources]

    def _one_condition(self, prompt: str | None, negative: str | None, strict: bool
                       ) -> tuple[torch.Tensor, PromptRow, torch.Tensor | None, PromptRow | None]:
        """One prompt's (cond (1, ...), row, negative cond, negative row); None is the null condition of a class
        model (unconditional), or the only condition of a model trained with --cond none."""
        if prompt is None and self.conditioning == "class":
            if negative is not None:
                raise UserError("a negative prompt needs a prompt to go with it")
            return torch.tensor([self.model.null_id]), PromptRow("", "none", "unconditional"), None, None
        cond, rows, neg, neg_row = self.conditions(None if prompt is None else [prompt], negative, strict)
        return cond, rows[0], neg, neg_row

    def edit(self, images: ImageSpec | Sequence[Source], prompt: str | None = None, n: int = 4,
             strength: float = DEFAULT_STRENGTH, sampling: SamplingConfig | None = None, *, negative: str | None = None,
             strict: bool = False, progress: Callable[[int], None] | None = None,
             callback: StepCallback | None = None, **options: Any) -> EditSamples:
        """Image to image (SDEdit; diffusion/editing.ImageToImage): each input noised to about strength x T, then
        denoised towards `prompt` (None: unconditional for a class model), n results per input, one row each:
        (K * n, C, H, W). Image j of every row starts from the noise of (seed, j), as in `sample`: strength 1 gives
        `sample_prompts(prompt, n)`'s images, strength 0 the inputs."""
        _check_images_per_prompt(n)
        strength = check_strength(strength)
        config = (sampling or SamplingConfig()).with_options(**options)
        x0, hashes = self._inputs(images)
        cond, row, neg, neg_row = self._one_condition(prompt, negative, strict)
        k = len(x0)
        guide = ImageToImage(to_model_range(x0).repeat_interleave(n, dim=0), strength)
        out = self.sample_pairs(cond.repeat_interleave(k * n, dim=0), torch.arange(n).repeat(k), config,
                                negative=neg, progress=progress, callback=callback, guide=guide)
        return EditSamples(out, [row] * k, neg_row, to_model_range(x0), hashes)

    def inpaint(self, image: Source | torch.Tensor, mask: Source | torch.Tensor | None = None,
                prompt: str | None = None, n: int = 4, sampling: SamplingConfig | None = None, *,
                box: Box | None = None, jump: int = DEFAULT_JUMP, repeats: int = DEFAULT_REPEATS,
                negative: str | None = None, strict: bool = False, progress: Callable[[int], None] | None = None,
                callback: StepCallback | None = None, **options: Any) -> EditSamples:
        """Inpainting (RePaint; diffusion/editing.Inpainting): where `mask` is white (a file or its bytes; or a bool
        tensor (S, S), True = generate), or inside `box` (x0, y0, x1, y1 in the image's pixels), n images are drawn
        towards `prompt`; elsewhere the result is the input exactly. `jump`, `repeats`: RePaint's resampling."""
        _check_images_per_prompt(n)
        if (mask is None) == (box is None):
            raise UserError("give a mask or a box (not both): what to generate")
        config = (sampling or SamplingConfig()).with_options(**options)
        resampling_plan([], jump, repeats)  # refuses a bad jump or repeats now, before the image is read
        c = self.config.model
        if isinstance(image, torch.Tensor):
            if not isinstance(mask, torch.Tensor):
                raise UserError("a mask file or a box needs the image as a file, to compare their sizes")
            x0, hashes = self._inputs(image)
        else:
            source = image if isinstance(image, bytes) else Path(image)
            u8, size = self.read_image(source)
            x0, hashes = u8[None], [file_sha256(source)]
        if isinstance(mask, torch.Tensor):
            generate = check_mask(mask.bool().reshape(1, c.image_size, c.image_size), "the mask")
        elif box is not None:
            generate = box_mask(box, size, self.config.data, c.image_size)
        else:
            generate = read_mask(mask if isinstance(mask, bytes) else Path(mask), size, self.config.data, c.image_size)
        cond, row, neg, neg_row = self._one_condition(prompt, negative, strict)
        guide = Inpainting(to_model_range(x0).expand(n, -1, -1, -1), (~generate).expand(n, -1, -1, -1), jump, repeats)
        out = self.sample_pairs(cond.repeat_interleave(n, dim=0), torch.arange(n), config, negative=neg,
                                progress=progress, callback=callback, guide=guide)
        return EditSamples(out, [row], neg_row, to_model_range(x0), hashes, generate)

    def interpolate(self, start: str | None = None, end: str | None = None, frames: int = DEFAULT_FRAMES,
                    sampling: SamplingConfig | None = None, *, seed_a: int | None = None, seed_b: int | None = None,
                    strict: bool = False, progress: Callable[[int], None] | None = None,
                    callback: StepCallback | None = None, **options: Any) -> Morph:
        """`frames` images from prompt `start` with the noise of seed_a to prompt `end` (default: `start`) with the
        noise of seed_b (defaults: the sampling seed): frame u in [0, 1] starts from slerp(z_a, z_b, u) and is
        conditioned on lerp(c_a, c_b, u) of whatever the network's condition path takes (a text model's embedding
        tensor of any shape; a class model's one-hot weights over its table, so its embedding is the lerp of the two
        rows). A deterministic sampler only (ddim at eta 0, dpm++2m): frame 0 is `sample(start, n=1, seed=seed_a)`
        and the last frame `sample(end, n=1, seed=seed_b)`."""
        config = (sampling or INTERPOLATION_SAMPLING).with_options(**options)
        if not config.deterministic:
            raise UserError(f"interpolation needs a deterministic sampler (ddim with eta 0, or dpm++2m), not "
                            f"{config.sampler.value}" + (f" with eta {config.eta:g}" if config.eta else ""))
        seed_a = config.seed if seed_a is None else SamplingConfig(seed=seed_a).seed
        seed_b = seed_a if seed_b is None else SamplingConfig(seed=seed_b).seed
        end = start if end is None else end
        if start == end and seed_a == seed_b:
            raise UserError("nothing to interpolate: give two prompts (--from, --to) or two seeds (--seed-a, --seed-b)")
        us = frame_positions(frames)
        (ca, row_a, _, _), (cb, row_b, _, _) = (self._one_condition(p, None, strict) for p in (start, end))
        if self.conditioning == "class":  # ids -> one-hot weights over the table (the null row included)
            ca, cb = class_mixture(ca.tolist(), self.model.null_id), class_mixture(cb.tolist(), self.model.null_id)
        elif self.conditioning == "text":
            ca, cb = ca.float(), cb.float()
        c = self.config.model
        shape = (c.channels, c.image_size, c.image_size)
        za, zb = PerSampleNoise(seed_a, [0]).randn(shape)[0], PerSampleNoise(seed_b, [0]).randn(shape)[0]
        x_T = torch.stack([slerp(za, zb, u) for u in us])  # (F, C, H, W)
        cond = (torch.cat([torch.lerp(ca, cb, u) for u in us]) if ca.is_floating_point()
                else ca.repeat_interleave(frames, dim=0))  # (F, ...); --cond none: one condition throughout
        out = self.sample_pairs(cond, torch.zeros(frames, dtype=torch.long), config, progress=progress,
                                callback=callback, guide=StartFrom(x_T))
        return Morph(out, us, row_a, row_b, seed_a, seed_b)

    def sample_pil(self, classes: ClassSpec | Sequence[ClassSpec] | None = None, n: int = 8, **kwargs: Any) -> list[Image.Image]:
        """Like `sample`, as a list of PIL images."""
        return tensor_to_pil(self.sample(classes, n, **kwargs))

    def effective_sampling(self, sampling: SamplingConfig) -> SamplingConfig:
        """`sampling` as this run applies it: steps resolved for its T, guidance for its conditioning (the default of
        a class or text model where none was given; 1 for an unconditional model)."""
        return sampling.resolved(self.schedule.num_steps, self.conditioning)

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
