"""The Python API, mirroring the CLI, for notebooks and scripts.

    import ddpm
    run = ddpm.load_run("runs/demo")                      # a run directory or a checkpoint file
    x = run.sample(["zebra", "cat"], n=4, sampler="ddpm", steps=50, guidance=3.0, seed=0)  # (8, C, H, W) in [-1, 1]
    images = run.sample_pil("zebra", n=4)                 # list of PIL images
    out = run.sample_prompts(["a zebra grazing", "a puppy"], n=4, negative="a horse")  # free text, one row each
    out.images, out.rows                                  # (8, C, H, W); what each prompt resolved to
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ddpm.training.checkpoint import load_checkpoint
from ddpm.config import RunConfig
from ddpm.data.dataset import to_uint8
from ddpm.text.captions import article, class_captions
from ddpm.diffusion.forward import PREDICTIONS, EpsModel, as_eps_model
from ddpm.common.errors import UserError
from ddpm.diffusion.guidance import NegativeAsNull
from ddpm.network.unet import UNet
from ddpm.diffusion.sampler import PerSampleNoise, StepCallback, sample
from ddpm.diffusion.schedule import NoiseSchedule

ClassSpec = str | int


def resolve_class(spec: ClassSpec, class_names: Sequence[str], aliases: dict[str, list[str]] | None = None) -> int:
    """A class name or alias (case-insensitive) or index -> class id; unknown names give a one-line UserError."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().lstrip("-").isdigit()):
        i = int(spec)
        if 0 <= i < len(class_names):
            return i
        raise UserError(f"class index {i} is out of range 0..{len(class_names) - 1}; known classes: {', '.join(class_names)}")
    lowered = [c.lower() for c in class_names]
    key = spec.strip().lower()
    if key in lowered:
        return lowered.index(key)
    for name, others in (aliases or {}).items():  # e.g. "cane" -> "dog"
        if key in (o.lower() for o in others) and name.lower() in lowered:
            return lowered.index(name.lower())
    raise UserError(f"unknown class {spec!r}; known classes: {', '.join(class_names)}")


@dataclass
class PromptRow:
    """How one prompt was understood: a class (class-conditioned model), a text embedding, or ignored ("none")."""

    prompt: str
    mode: str  # class | text | none
    label: str  # the class drawn, the prompt itself, or "unconditional"
    similarity: float | None = None  # to the nearest class anchor or training caption (None: not measured)
    nearest: list[tuple[str, float]] = field(default_factory=list)  # best first
    far: bool = False


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

    def class_ids(self, classes: ClassSpec | Sequence[ClassSpec] | None) -> list[int]:
        """None means every class in order."""
        if classes is None:
            return list(range(len(self.class_names)))
        if isinstance(classes, (str, int)):
            classes = [classes]
        return [resolve_class(c, self.class_names, self.config.data.aliases) for c in classes]

    @property
    def cond(self) -> str:
        return self.config.model.cond

    def run_captions(self) -> list[str]:
        """The unique training captions of a text-conditioned run (RUN/captions.json), else its class templates."""
        import json

        if self.path is not None and (self.path / "captions.json").is_file():
            return json.loads((self.path / "captions.json").read_text())
        return [c for name in self.class_names for c in class_captions(name)]

    def resolve_prompts(self, prompts: Sequence[str], strict: bool = False) -> tuple[torch.Tensor, list[PromptRow]]:
        """Conditions for the prompts ((P,) class ids or (P, 384) embeddings) and how each was understood.
        A prompt far from every class (class mode) or training caption (text mode) gives a FarPrompt warning
        naming the nearest ones, or a UserError when strict."""
        from ddpm.text.prompts import Matcher, clean_prompt, match_classes, report_far

        prompts = [clean_prompt(p) for p in prompts]
        if self.cond == "class":
            matches = match_classes(prompts, self.class_names, self.config.data.aliases, strict)
            rows = [PromptRow(m.prompt, "class", m.name, m.similarity, m.nearest, m.far) for m in matches]
            return torch.tensor([m.index for m in matches], dtype=torch.long), rows
        if self.cond == "text":
            from ddpm.text.encoder import load_encoder

            emb = load_encoder().encode(prompts)  # (P, 384)
            matches = Matcher.for_captions(self.run_captions()).match(prompts, emb)
            report_far(matches, strict)
            return emb, [PromptRow(m.prompt, "text", m.prompt, m.similarity, m.nearest, m.far) for m in matches]
        raise UserError("this model is unconditional (trained with --cond none); it takes no prompt")

    def sample_prompts(self, prompts: Sequence[str] | str | None, n: int = 8, *, negative: str | None = None,
                       strict: bool = False, **kwargs) -> PromptSamples:
        """n images per prompt, one row each (see `sample` for the sampling keywords). Class-conditioned models map
        each prompt to a class (exact names, aliases and indices first, then by similarity); text-conditioned
        models encode it. `negative` replaces the unconditional branch of guidance: eps_neg + w (eps - eps_neg).
        prompts None: every class (class mode), one unconditional row (none); a text model needs prompts."""
        if n < 1:
            raise UserError(f"-n must be at least 1, got {n}")
        if isinstance(prompts, str):
            prompts = [prompts]
        if self.cond == "none":
            if prompts or negative:
                raise UserError("this model is unconditional (trained with --cond none); drop the prompts and --negative")
            cond, rows = torch.zeros(1, dtype=torch.long), [PromptRow("", "none", "unconditional")]
            kwargs["guidance"] = 1.0  # both branches would be equal
        elif not prompts:
            if self.cond == "text":
                raise UserError("a text-conditioned model needs a prompt, e.g. ddpm sample --checkpoint RUN \"a red "
                                "square\"")
            cond = torch.arange(len(self.class_names))
            rows = [PromptRow(c, "class", c, 1.0, [(c, 1.0)]) for c in self.class_names]
        else:
            cond, rows = self.resolve_prompts(list(prompts), strict)
        neg_row = None
        model = None
        if negative is not None:
            neg_cond, (neg_row,) = self.resolve_negative(negative, strict)
            model = NegativeAsNull(self.eps_model, self.model.null_class, neg_cond[0])
        cond = cond.repeat_interleave(n, dim=0)
        index = torch.arange(n).repeat(len(rows))
        images = self.sample_pairs(cond, index, model=model, **kwargs)
        return PromptSamples(images, rows, neg_row)

    def resolve_negative(self, negative: str, strict: bool = False) -> tuple[torch.Tensor, list[PromptRow]]:
        import warnings

        from ddpm.text.prompts import FarPrompt

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FarPrompt)
            cond, rows = self.resolve_prompts([negative], strict=False)
        if rows[0].far:
            near = ", ".join(f"{n!r} {s:.2f}" for n, s in rows[0].nearest)
            if self.cond == "class":
                raise UserError(f"the negative prompt {negative!r} matches no class of this model (nearest: {near}); "
                                "name a class it knows or drop --negative")
            if strict:
                raise UserError(f"the negative prompt {negative!r} is far from everything this model knows "
                                f"(nearest: {near}); rephrase it or drop --strict")
        for w in caught:
            if not issubclass(w.category, FarPrompt):
                warnings.warn(w.message, w.category)
        return cond, rows

    def sample(
        self,
        classes: ClassSpec | Sequence[ClassSpec] | None = None,
        n: int = 8,
        *,
        sampler: str = "ddpm",
        steps: int | None = 50,
        guidance: float = 3.0,
        seed: int = 0,
        eta: float = 0.0,
        variance: str = "beta_tilde",
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
        callback: StepCallback | None = None,
    ) -> torch.Tensor:
        """n images per class, class-major: (len(classes) * n, C, H, W) float in [-1, 1]. Defaults: 50 strided
        ancestral steps at guidance 3 (steps=None: every one of the T steps for ddpm, 50 for ddim, 20 for dpm++2m).
        Image j of a class starts from noise seeded by (seed, j): it does not depend on batch_size, on n, or on
        which other classes are asked for, and image j of every class shares its noise (compare classes).
        progress(images) after each batch; callback(t, x_t, x0_hat) after each step of each batch (trajectory.py)."""
        if n < 1:
            raise UserError(f"-n must be at least 1, got {n}")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        ids = self.class_ids(classes)
        cond = torch.tensor(ids).repeat_interleave(n)  # class-major: class 0 x n, class 1 x n, ...
        index = torch.arange(n).repeat(len(ids))  # image j of each class draws its noise from (seed, j)
        return self.sample_pairs(cond, index, sampler=sampler, steps=steps, guidance=guidance, seed=seed, eta=eta,
                                 variance=variance, batch_size=batch_size, progress=progress, callback=callback)

    def sample_pairs(self, cond: torch.Tensor, index: torch.Tensor, *, sampler: str = "ddpm", steps: int | None = 50,
                     guidance: float = 3.0, seed: int = 0, eta: float = 0.0, variance: str = "beta_tilde",
                     batch_size: int = 64, progress: Callable[[int], None] | None = None,
                     callback: StepCallback | None = None, model: EpsModel | None = None) -> torch.Tensor:
        """Image index[i] of class cond[i], for each i: the same image `sample` gives for that (class, j) pair, so a
        subset of the pairs (one rank's share under torchrun) can be sampled on its own. cond: (N,) class ids, or
        (N, 384) text embeddings for a text model (class ids there stand for the prompt "a <class name>").
        `model`: a wrapper of self.eps_model to call instead (a negative prompt, guidance.NegativeAsNull)."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if self.cond == "text" and cond.dim() == 1 and len(cond):
            cond = self._class_prompts(cond)
        c = self.config.model
        if len(cond) == 0:
            return torch.empty(0, c.channels, c.image_size, c.image_size)
        out = []
        for start in range(0, len(cond), batch_size):
            stop = min(start + batch_size, len(cond))
            x = sample(model or self.eps_model, self.schedule, cond[start:stop], (c.channels, c.image_size, c.image_size),
                       PerSampleNoise(seed, index[start:stop].tolist()), sampler=sampler, steps=steps,
                       guidance=guidance, null_id=self.model.null_class, eta=eta, variance=variance, device=self.device,
                       callback=callback)
            out.append(x.cpu())
            if progress is not None:
                progress(stop - start)
        return torch.cat(out)

    def _class_prompts(self, ids: torch.Tensor) -> torch.Tensor:
        """(N,) class ids -> (N, 384) embeddings of "a <class name>" (a text model trained on class folders)."""
        from ddpm.text.encoder import load_encoder

        emb = load_encoder().encode([article(n) for n in self.class_names])  # (classes, 384)
        return emb[ids]

    def sample_pil(self, classes: ClassSpec | Sequence[ClassSpec] | None = None, n: int = 8, **kwargs) -> list[Image.Image]:
        """Like `sample`, as a list of PIL images."""
        return tensor_to_pil(self.sample(classes, n, **kwargs))


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [-1, 1] -> N PIL images (mode L or RGB)."""
    arr = to_uint8(x).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def load_run(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> TrainedModel:
    """Rebuild a trained model from a run directory or checkpoint file, with no other information."""
    config, weights, ema_weights, step = load_checkpoint(path)
    if config.diffusion.prediction not in PREDICTIONS:
        raise UserError(f"checkpoint {path} predicts {config.diffusion.prediction!r}, which this ddpm does not know "
                        f"({', '.join(PREDICTIONS)}); upgrade ddpm or retrain")
    model = UNet(config.model)
    state = ema_weights if use_ema and ema_weights else weights
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"checkpoint {path} does not match its config ({first}); it is damaged or from another version") from None
    device = torch.device(device)
    model.to(device).eval().requires_grad_(False)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    run_dir = Path(path).expanduser()
    return TrainedModel(config, model, schedule, step, device, run_dir if run_dir.is_dir() else run_dir.parent)


def train_run(config: RunConfig, out_dir: str | Path, device: str | torch.device = "cpu", progress: bool = True,
              cache_dir: str | Path | None = None, resume: str | Path = "auto") -> TrainedModel:
    """Load the dataset named in config.data.source, record its classes in the config, train, and return the
    trained model (EMA weights). Under torchrun, every rank calls this (see distributed.py).
    `resume`: "auto" continues from the newest valid snapshot in out_dir (a finished run asked again with the same
    training settings is reported and returned as it is; other settings are refused); "never" starts fresh and
    refuses a directory that holds a checkpoint or snapshots; a path continues from that snapshot file.
    `cache_dir`: where decoded folder datasets are cached (default $DDPM_CACHE_DIR or ~/.cache/ddpm)."""
    import warnings

    from ddpm.runtime.distributed import init, shutdown

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    try:
        config.model.validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    world, device = init(torch.device(device))
    try:
        with warnings.catch_warnings():
            if not world.is_main:  # rank 0 alone reports skipped files and resume notes
                warnings.simplefilter("ignore")
            return _train_in_world(config, out, device, progress and world.is_main, cache_dir, resume, world)
    finally:
        shutdown(world)


def _train_in_world(config: RunConfig, out: Path, device: torch.device, progress: bool,
                    cache_dir: str | Path | None, resume: str | Path, world) -> TrainedModel:
    import sys
    import warnings

    from ddpm.data.dataset import load_dataset
    from ddpm.runtime.distributed import broadcast_object
    from ddpm.training.snapshot import SnapshotWarning, check_compatible, load_snapshot
    from ddpm.training.loop import train

    snap, error = (_choose_snapshot(out, resume) if world.is_main else (None, None))
    path, error = broadcast_object(world, (snap.path if snap else None, error))
    if error:
        raise UserError(error)
    if path is not None and snap is None:
        snap = load_snapshot(path, verify=False)  # rank 0 verified the checksum
    if snap is not None and snap.step >= config.train.steps:
        if snap.step == config.train.steps and snap.config.train == config.train:
            if world.is_main:
                _ensure_checkpoint(out, snap)
                sys.stderr.write(f"{out} already finished at step {snap.step}; nothing to do (raise --steps to train "
                                 "further)\n")
            return load_run(out, device)
        raise UserError(f"{out} already holds a trained run (step {snap.step}); choose another --out, delete it, or "
                        f"raise --steps above {snap.step} to continue it")
    data = load_dataset(config.data.source, config.model.image_size, config.model.channels, "train",
                        options=config.data, cache_dir=cache_dir, progress=progress)
    config.data.class_names = list(data.class_names)
    config.data.aliases = dict(data.aliases)
    config.model.num_classes = len(data.class_names)
    if snap is not None:
        changed = check_compatible(snap.config, config, snap.path)
        if changed:
            warnings.warn(f"resuming {snap.path} with changed training settings: {'; '.join(changed)}", SnapshotWarning)
        saved_world = int(snap.state["world_size"])
        if saved_world != world.world_size:
            warnings.warn(
                f"snapshot at step {snap.step} was written by {saved_world} process(es) (global batch "
                f"{snap.state['global_batch']}); continuing with {world.world_size} (global batch "
                f"{config.train.batch_size * world.world_size}): the {snap.state['samples_seen']:,} samples seen so "
                "far are kept and the data order continues where it stopped", SnapshotWarning)
    text = None
    if config.model.cond == "text":
        from ddpm.text.bank import build_caption_bank

        text = build_caption_bank(data, Path(cache_dir).expanduser() if cache_dir else None)
    state = train(config, data, out, device=device, progress=progress, world=world, resume=snap, text=text)
    schedule = NoiseSchedule.create(config.diffusion.schedule, config.diffusion.num_steps)
    return TrainedModel(config, state.ema.eval(), schedule, state.step, device, out)


def _choose_snapshot(out: Path, resume: str | Path):
    """(snapshot to continue from or None, error line or None); run on rank 0, whose answer every rank follows."""
    from ddpm.training.checkpoint import CHECKPOINT_NAME
    from ddpm.training.snapshot import find_latest, list_snapshots, load_snapshot

    finished = (out / CHECKPOINT_NAME).exists()
    try:
        if str(resume) == "never":
            if finished or list_snapshots(out):
                what = "a trained run" if finished else "snapshots of an unfinished run (--resume auto continues it)"
                return None, f"{out} already holds {what}; choose another --out or delete it first"
            return None, None
        if str(resume) == "auto":
            snap = find_latest(out)
            if snap is None and finished:
                return None, f"{out} already holds a trained run; choose another --out or delete it first"
            return snap, None
        path = Path(resume).expanduser()
        if path.is_dir():  # a run directory: its newest valid snapshot
            snap = find_latest(path)
            return (snap, None) if snap else (None, f"--resume {resume}: no usable snapshot in that directory")
        return load_snapshot(path), None
    except UserError as e:
        return None, str(e)


def _ensure_checkpoint(out: Path, snap) -> None:
    """A run killed between its final snapshot and checkpoint... cannot happen (checkpoint first), but a deleted
    checkpoint is rebuilt from the final snapshot."""
    from ddpm.training.checkpoint import CHECKPOINT_NAME, save_checkpoint

    if not (out / CHECKPOINT_NAME).exists():
        model, ema = UNet(snap.config.model), UNet(snap.config.model)
        model.load_state_dict(snap.group("model"))
        ema.load_state_dict(snap.group("ema"))
        save_checkpoint(out / CHECKPOINT_NAME, snap.config, model, ema, snap.step)
