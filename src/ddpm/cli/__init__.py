"""`ddpm` command line: parses arguments and calls the library, nothing else.
User errors are printed as one line (`ddpm: error: ...`) with exit code 2; tracebacks are for bugs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.common.parse import ascii_integer, ascii_real
from ddpm.diffusion.sampling import (
    DEFAULT_FRAMES,
    DEFAULT_GUIDANCE,
    DEFAULT_JUMP,
    DEFAULT_REPEATS,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    EVAL_SAMPLING,
    INTERPOLATION_SAMPLING,
    SAMPLERS,
    VARIANCES,
    SamplingConfig,
    strength_check,
)
from ddpm.evaluation.features import FEATURE_PRECISIONS

DESCRIPTION = "Train class-conditional denoising diffusion models and draw images from them."
SAMPLER_HELP = ("ddpm: ancestral (stochastic); ddim: deterministic at eta 0; dpm++2m: DPM-Solver++(2M), deterministic, "
                "few steps; dpm++2m-sde: its stochastic form")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (with a pointer to --help) and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


Check = Callable[[Any], "str | None"]  # (value) -> None, or what was expected: config.py's kind of check


def _typed(read: Callable[[str], Any], kind: str, reason: Callable[[Any], str | None] | None = None) -> Callable[[str], Any]:
    """An argparse type: `read` the text (common/parse: ASCII digits only; None when it is not `kind`), then ask
    `reason` why the value is refused (None: it is not). The check behind `reason` is the option's one check and
    lives with what the option means (a config field, SamplingConfig, the grid, ...); it is applied here too, so that
    a bad value stops the command before it loads or computes anything."""

    def parse(text: str) -> Any:
        value = read(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {_clip(text)!r}")
        why = reason(value) if reason else None
        if why:
            raise argparse.ArgumentTypeError(why)
        return value

    return parse


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _expects(check: Check) -> Callable[[Any], str | None]:
    """The reason of a check that says what was expected: "expected <that>, got <value>"."""
    def reason(value: Any) -> str | None:
        expected = check(value)
        return None if expected is None else f"expected {expected}, got {_clip(str(value))}"
    return reason


def _lazy(module: str, name: str) -> Check:
    """Check `name` of `module`, imported when a flag is given: the parser itself stays quick to build (the modules
    of the library import torch, and ddpm.evaluation torchmetrics, seconds more)."""
    def check(value: Any) -> str | None:
        import importlib

        return getattr(importlib.import_module(module), name)(value)
    return check


def _refusal(make: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """The reason of a constructor that validates its argument (SamplingConfig, EvalSettings): its one-line
    UserError, which names the value."""
    def reason(value: Any) -> str | None:
        try:
            make(value)
        except UserError as e:
            return str(e)
        return None
    return reason


def _config(section: str, name: str) -> Callable[[str], Any]:
    """The argparse type of a flag that means config key section.name outside `ddpm train` (whose flags resolve.py
    checks): a whole number read as text, then the field's check."""
    from ddpm.config import field_check

    return _typed(ascii_integer, "a whole number", _expects(field_check(section, name)))


def _count(module: str, check: str) -> Callable[[str], Any]:
    """The argparse type of a whole number whose check is `check` of the library module `module`."""
    return _typed(ascii_integer, "a whole number", _expects(_lazy(module, check)))


def _sampling(name: str, read: Callable[[str], Any]) -> Callable[[str], Any]:
    """The argparse type of SamplingConfig field `name`: its text read, its value checked by SamplingConfig."""
    return _typed(read, "a whole number" if read is ascii_integer else "a number",
                  _refusal(lambda v: SamplingConfig(**{name: v})))


def _eval_settings(num_samples: int) -> Any:
    from ddpm.evaluation.evaluate import EvalSettings

    return EvalSettings(num_samples=num_samples)


def path(text: str) -> Path:
    """An argparse type: a path. Empty text, which Path reads as the current folder, is refused."""
    if text == "":
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return Path(text)


positive_int = _typed(ascii_integer, "a whole number", _expects(lambda v: None if v >= 1 else "a whole number >= 1"))
port_number = _typed(ascii_integer, "a whole number",
                     _expects(lambda v: None if 1 <= v <= 65535 else "a port number from 1 to 65535"))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help ends with its default, unless the help says it already (a None that is resolved later,
    such as the sampler's steps or the model's guidance)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if "(default: " in (action.help or "") else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from ddpm.cli.train_flags import add_train_flags
    from ddpm.config import SCHEDULES, DataConfig, DiffusionConfig
    from ddpm.data.builtin import BUILTIN

    fmt = HelpFormatter
    parser = Parser(prog="ddpm", description=DESCRIPTION, formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    d, dc = DiffusionConfig(), DataConfig()

    p = sub.add_parser("train", help="train a model on a dataset (the measured recipe, shaped by the data)",
                       description="Train a diffusion model. Defaults: the recipe in README.md (cosine schedule, "
                       "v-prediction, min-SNR, cosine LR decay, power EMA), a size preset, and the image shape read "
                       "from the data; a --config file, then flags, override them.")
    p.add_argument("--out", required=True, type=path, help="run directory (created)")
    p.add_argument("--config", type=path, default=None,
                   help="a TOML or JSON config file (a run's config.json repeats that run); flags override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved configuration as JSON (a valid --config file) and exit")
    add_train_flags(p)
    p.add_argument("--cache-dir", type=path, default=None, help="folders: decoded-image cache (default $DDPM_CACHE_DIR or ~/.cache/ddpm)")
    p.add_argument("--resume", default="auto",
                   help="auto: continue from the newest valid snapshot in --out; never: start fresh; or a snapshot file")
    _add_common(p)

    p = sub.add_parser("sample", help="draw images of given classes or prompts from a trained run", formatter_class=fmt)
    p.add_argument("prompt", nargs="*", help="prompts (free text, class names or indices), one grid row each (default: every class)")
    p.add_argument("--prompts-file", type=path, default=None, help="UTF-8 text file, one prompt a line (after any given prompts)")
    p.add_argument("--negative", default=None, help="negative prompt: replaces the unconditional branch of guidance")
    p.add_argument("--strict", action="store_true", help="a prompt far from everything the model knows is an error (exit 2), not a warning")
    p.add_argument("--images", type=path, default=None, help="also save each image as DIR/row<r>-<j>.png with its own metadata")
    p.add_argument("--checkpoint", required=True, type=path, help="run directory or checkpoint file")
    p.add_argument("-n", type=_count("ddpm.api", "images_per_prompt_check"), default=8,
                   help="images per class")
    add_sampling_flags(p, SamplingConfig())
    p.add_argument("--out", type=path, default=Path("samples.png"), help="grid PNG, one row per class")
    p.add_argument("--scale", type=_count("ddpm.pictures.grid", "scale_check"), default=2,
                   help="nearest-neighbour upscaling of the grid")
    p.add_argument("--trajectory", type=path, default=None,
                   help="also write the denoising as an animated GIF (x_t beside predicted x_0) and a PNG strip of x_0 predictions")
    _add_force(p)
    _add_common(p)

    p = sub.add_parser("edit", help="image to image (SDEdit): noise images part way and denoise them towards a prompt",
                       formatter_class=fmt)
    _add_edit_flags(p, "edit.png", "results per input image")
    p.add_argument("--image", action="append", required=True, type=path,
                   help="an input image, decoded and resized as the run's training data (repeat for more, one grid row each)")
    p.add_argument("--strength", type=_typed(ascii_real, "a number", _expects(strength_check)),
                   default=DEFAULT_STRENGTH, help="how far to noise: 0 returns the input, 1 is plain sampling (t = strength x T)")
    add_sampling_flags(p, SamplingConfig())

    p = sub.add_parser("inpaint", help="fill a masked region of an image (RePaint), keeping the rest exactly",
                       formatter_class=fmt)
    _add_edit_flags(p, "inpaint.png", "results")
    p.add_argument("--image", required=True, type=path, help="the input image")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--mask", type=path, help="a mask of the image's size: white = generate, black = keep")
    where.add_argument("--box", type=box, help="x0,y0,x1,y1: a rectangle to generate, in the image's pixels")
    p.add_argument("--jump", type=_count("ddpm.diffusion.sampling", "jump_check"), default=DEFAULT_JUMP,
                   help="RePaint's jump length in sampler steps (the default measured: docs/editing.md)")
    p.add_argument("--repeats", type=_count("ddpm.diffusion.sampling", "repeats_check"), default=DEFAULT_REPEATS,
                   help="each stretch of --jump steps is denoised this many times (1: no resampling)")
    add_sampling_flags(p, SamplingConfig())

    p = sub.add_parser("interpolate", help="morph between two prompts or two seeds (GIF and PNG strip)",
                       formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, type=path, help="run directory or checkpoint file")
    p.add_argument("--from", dest="start", default=None, help="the first frame's prompt")
    p.add_argument("--to", dest="end", default=None, help="the last frame's prompt (default: --from)")
    p.add_argument("--frames", type=_count("ddpm.diffusion.sampling", "frames_check"), default=DEFAULT_FRAMES,
                   help="frames, both ends included")
    p.add_argument("--seed-a", type=_sampling("seed", ascii_integer), default=None,
                   help="noise of the first frame (default: --seed)")
    p.add_argument("--seed-b", type=_sampling("seed", ascii_integer), default=None,
                   help="noise of the last frame (default: --seed-a)")
    p.add_argument("--strict", action="store_true", help="a prompt far from everything the model knows is an error")
    add_sampling_flags(p, INTERPOLATION_SAMPLING)
    p.add_argument("--out", type=path, default=Path("morph.gif"), help="animated GIF; the PNG strip goes beside it (.png)")
    p.add_argument("--scale", type=_count("ddpm.pictures.grid", "scale_check"), default=4,
                   help="nearest-neighbour upscaling of the frames")
    _add_force(p)
    _add_common(p)

    p = sub.add_parser("serve", help="a web page on this machine to generate images from a trained run", formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, type=path, help="run directory or checkpoint file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=7860, help="port to listen on")
    p.add_argument("--max-queue", type=positive_int, default=8, help="requests that may wait; more are refused (HTTP 429)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="also answer pages from this origin (scheme://host[:port], e.g. a reverse proxy's public URL); "
                        "repeatable. Without it only the server's own page may call it")
    p.add_argument("--device", default="auto", help="auto (CUDA if visible, else Apple MPS, else CPU), cpu, cuda[:N] or mps")

    p = sub.add_parser("noise", help="animate an image destroyed step by step under each schedule", formatter_class=fmt)
    p.add_argument("--image", type=path, default=None, help="an image file (default: a zebra of the built-in dataset)")
    p.add_argument("--schedules", default="linear,cosine", help=f"comma-separated, from {', '.join(SCHEDULES)}")
    p.add_argument("--timesteps", type=_config("diffusion", "num_steps"), default=d.num_steps,
                   help="number of diffusion steps T")
    p.add_argument("--image-size", type=_config("model", "image_size"), default=64, help="resize the image to this size")
    p.add_argument("--frames", type=_count("ddpm.pictures.noising", "frames_check"), default=40,
                   help="frames in the animation")
    p.add_argument("--seed", type=_config("train", "seed"), default=0, help="seed of the noise")
    p.add_argument("--out", type=path, default=Path("noising.gif"), help="GIF path; a strip PNG and an alpha-bar plot go beside it")
    _add_force(p)
    _add_common(p)

    p = sub.add_parser("data", help="look at a dataset folder before training on it", formatter_class=fmt)
    data_sub = p.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    q = data_sub.add_parser("inspect", help="classes, counts, sizes, modes, skipped files, a contact sheet", formatter_class=fmt)
    q.add_argument("path", type=path, help="a folder with one subfolder per class (or a captioned folder)")
    q.add_argument("--json", action="store_true", help="print the report as one JSON object")
    q.add_argument("--sheet", type=path, default=Path("contact_sheet.png"), help="contact-sheet PNG, one row per class")
    q.add_argument("--per-class", type=_count("ddpm.data.inspect", "per_class_check"), default=8,
                   help="images per class on the contact sheet")
    q.add_argument("--image-size", type=_config("model", "image_size"), default=64, help="decode size (px); the cache is shared with training at this size")
    q.add_argument("--channels", type=_config("model", "channels"), default=3, help="1 grayscale, 3 RGB")
    q.add_argument("--min-size", type=_config("data", "min_size"), default=dc.min_size, help="skip images whose shorter side is smaller (px)")
    q.add_argument("--cache-dir", type=path, default=None, help="decoded-image cache (default $DDPM_CACHE_DIR or ~/.cache/ddpm)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_force(q)

    p = sub.add_parser("demo", help="train on the built-in dataset, then draw a grid and the noising animation", formatter_class=fmt)
    p.add_argument("--out", type=path, default=None, help="run directory (default: runs/demo)")
    p.add_argument("--steps", type=_config("train", "steps"), default=None, help="override the demo's training steps")
    p.add_argument("--text", action="store_true", help="the text demo: a text-conditioned model on the generated "
                   "shapes (builtin:shapes-text), a grid of typed prompts and its prompt-faithfulness table "
                   "(default --out runs/demo-text)")
    _add_common(p)

    p = sub.add_parser("eval", help="FID, KID, per-class accuracy and classifier score of a trained run", formatter_class=fmt)
    p.add_argument("--checkpoint", required=True, type=path, help="run directory or checkpoint file")
    p.add_argument("--data", default="", help="dataset of the real reference images (default: the run's)")
    p.add_argument("--split", default="test", help="split of the reference images (the built-in dataset: test or train)")
    p.add_argument("--num-samples", type=_typed(ascii_integer, "a whole number", _refusal(_eval_settings)), default=None, help="generated images in all, split over the classes (default: 1000 on CPU, 10000 on GPU)")
    add_sampling_flags(p, EVAL_SAMPLING, seed_help="seed of the samples and of KID's subsets")
    p.add_argument("--classifier", type=path, default=None, help="domain classifier from `ddpm classifier train` (per-class accuracy, classifier score)")
    p.add_argument("--inception-weights", type=path, default=None, help="a TorchScript Inception with class logits (NVlabs' inception-2015-12-05.pt) for the standard IS")
    p.add_argument("--no-inception", action="store_true", help="skip FID/KID on Inception features (slow on a CPU)")
    p.add_argument("--feature-precision", choices=list(FEATURE_PRECISIONS), default="fp32",
                   help="precision of the Inception features: bf16 is ~2x faster than fp32 on a CPU or GPU with native "
                        "bf16 but moves FID by up to ~0.8%% (docs/evaluation.md); each precision has its own reference cache")
    p.add_argument("--cache-dir", type=path, default=None, help="cache of reference features (default $DDPM_CACHE_DIR or ~/.cache/ddpm)")
    p.add_argument("--out", type=path, default=Path("eval"), help="folder for eval.json, report.md, report.html and the grids")
    p.add_argument("--json", action="store_true", help="print eval.json to stdout (messages and progress go to stderr)")
    _add_force(p)
    _add_common(p)

    p = sub.add_parser("classifier", help="the domain classifier that ddpm eval uses", formatter_class=fmt)
    clf_sub = p.add_subparsers(dest="classifier_command", required=True, parser_class=Parser)
    q = clf_sub.add_parser("train", help="train it on a dataset's train split, report its test-split accuracy", formatter_class=fmt)
    q.add_argument("--data", default=BUILTIN, help=f"{BUILTIN} or a folder with one subfolder per class")
    q.add_argument("--out", type=path, required=True, help="classifier file (.safetensors)")
    q.add_argument("--image-size", type=_config("model", "image_size"), default=28, help="image size (px): that of the runs to evaluate")
    q.add_argument("--channels", type=_config("model", "channels"), default=1, help="1 grayscale, 3 RGB")
    q.add_argument("--epochs", type=positive_int, default=4, help="passes over the train split")
    q.add_argument("--seed", type=_config("train", "seed"), default=0, help="seed of the weights and batches")
    q.add_argument("--cache-dir", type=path, default=None, help="folders: decoded-image cache (default $DDPM_CACHE_DIR or ~/.cache/ddpm)")
    _add_force(q)
    _add_common(q)
    return parser


def add_sampling_flags(p: argparse.ArgumentParser, preset: SamplingConfig, seed_help: str = "image i depends only on (seed, i)") -> None:
    """The flags of every SamplingConfig field (dest = the field's name), their defaults taken from `preset`: their
    text is read here and their values checked by SamplingConfig (one check, whichever way they come)."""
    steps_help = ", ".join(f"{n} for {s.value}" for s, n in DEFAULT_STEPS.items())
    guidance_help = ", ".join(f"{w:g} for a {cond} model" for cond, w in DEFAULT_GUIDANCE.items())
    p.add_argument("--sampler", choices=SAMPLERS, default=preset.sampler.value, help=SAMPLER_HELP)
    p.add_argument("--steps", type=_sampling("steps", ascii_integer), default=preset.steps,
                   help=f"sampling steps, evenly spaced over T (default: {steps_help}); ddpm with T steps is the original sampler (slow)")
    p.add_argument("--guidance", type=_sampling("guidance", ascii_real), default=preset.guidance,
                   help=f"guidance weight w: 0 unconditional, 1 conditional, >1 stronger (default: {guidance_help})")
    p.add_argument("--eta", type=_sampling("eta", ascii_real), default=preset.eta, help="DDIM noise from 0 (deterministic) to 1 (DDPM-like)")
    p.add_argument("--variance", choices=VARIANCES, default=preset.variance.value, help="ancestral DDPM step variance")
    p.add_argument("--seed", type=_sampling("seed", ascii_integer), default=preset.seed, help=seed_help)
    p.add_argument("--batch-size", type=_sampling("batch_size", ascii_integer), default=preset.batch_size,
                   help="images per network call")


def _add_edit_flags(p: argparse.ArgumentParser, out: str, n_help: str) -> None:
    """The flags `edit` and `inpaint` share with `sample`: checkpoint, prompt, negative, -n, output."""
    p.add_argument("prompt", nargs="?", default=None,
                   help="what to draw (free text, a class name or index; default: unconditional)")
    p.add_argument("--checkpoint", required=True, type=path, help="run directory or checkpoint file")
    p.add_argument("--negative", default=None, help="negative prompt: replaces the unconditional branch of guidance")
    p.add_argument("--strict", action="store_true", help="a prompt far from everything the model knows is an error")
    p.add_argument("-n", type=_count("ddpm.api", "images_per_prompt_check"), default=4, help=n_help)
    p.add_argument("--out", type=path, default=Path(out), help="grid PNG: each input, then its results")
    p.add_argument("--scale", type=_count("ddpm.pictures.grid", "scale_check"), default=2,
                   help="nearest-neighbour upscaling of the grid")
    _add_force(p)
    _add_common(p)


def box(text: str) -> tuple[int, int, int, int]:
    """An argparse type: x0,y0,x1,y1, four whole numbers (the library checks they fit the image)."""
    parts = [ascii_integer(part.strip()) for part in text.split(",")]
    if len(parts) != 4 or any(part is None for part in parts):
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 (four whole numbers, pixels of the image), got "
                                         f"{_clip(text)!r}")
    return tuple(parts)  # type: ignore[return-value]


def _add_force(p: argparse.ArgumentParser) -> None:
    """--force: the one flag that lets a command replace its existing output files (common/outputs.check_output)."""
    p.add_argument("--force", action="store_true",
                   help="replace existing output files (never the checkpoint or other files this command reads)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if visible, else Apple MPS, else CPU), cpu, cuda[:N] or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import ddpm.cli.commands as commands

    try:
        getattr(commands, f"cmd_{args.command}")(args)
    except UserError as e:  # as_text: a path or prompt that is not UTF-8 reads as it does on stdout (common/ostext)
        sys.stderr.write(f"ddpm {args.command}: error: {as_text(str(e))}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as e:  # a training run stopped by SIGTERM/SIGINT after writing its snapshot
        from ddpm.training.loop import TrainingInterrupted

        if not isinstance(e, TrainingInterrupted):
            raise
        sys.stderr.write(f"ddpm {args.command}: {e}\n")
        return 128 + e.signum
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
