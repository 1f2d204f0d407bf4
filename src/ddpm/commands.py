"""One function per subcommand: turn parsed arguments into library calls and print where results went."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Iterator

import torch

from .config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig
from .errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return device


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        model=ModelConfig(
            image_size=args.image_size, channels=args.channels, base_channels=args.base_channels,
            channel_mults=tuple(args.channel_mults), num_res_blocks=args.num_res_blocks,
            attention_resolutions=tuple(args.attention_resolutions), dropout=args.dropout,
        ),
        diffusion=DiffusionConfig(
            schedule=args.schedule, num_steps=args.timesteps, loss_weighting=args.loss_weighting,
            cond_drop_prob=args.cond_drop,
        ),
        train=TrainConfig(
            steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup,
            lr_schedule=args.lr_schedule, grad_clip=args.grad_clip, ema_decay=args.ema_decay, seed=args.seed,
            hflip=not args.no_hflip, precision=args.precision, log_every=args.log_every,
            sample_every=args.sample_every, save_every=args.save_every, balance=args.balance,
            snapshot_every=args.snapshot_every, keep_snapshots=args.keep_snapshots,
        ),
        data=DataConfig(source=args.data, crop=args.crop, background=args.background, min_size=args.min_size),
    )


def cmd_train(args: argparse.Namespace) -> None:
    from .api import train_run
    from .distributed import env_rank

    config = config_from_args(args)
    with _one_line_warnings():
        train_run(config, args.out, device=resolve_device(args.device), progress=not args.quiet, cache_dir=args.cache_dir,
                  resume=args.resume)
    if env_rank() != 0:  # under torchrun, rank 0 alone prints
        return
    print(f"run directory: {args.out}")
    print(f"sample from it: ddpm sample --checkpoint {args.out} {config.data.class_names[0]} -n 8")


def cmd_sample(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from .api import load_run
    from .visual import make_grid

    run = load_run(args.checkpoint, device=resolve_device(args.device))
    ids = run.class_ids(args.prompt or None)
    with tqdm(total=len(ids) * args.n, desc="sample", unit="img", disable=args.quiet) as bar:
        x = run.sample(ids, args.n, sampler=args.sampler, steps=_steps(args), guidance=args.guidance, seed=args.seed,
                       eta=args.eta, variance=args.variance, batch_size=args.batch_size, progress=bar.update)
    from .data import to_uint8

    grid = make_grid(to_uint8(x), nrow=args.n, labels=[run.class_names[i] for i in ids], scale=args.scale)
    _parent(args.out)
    grid.save(args.out)
    print(f"grid: {args.out}")


def cmd_noise(args: argparse.Namespace) -> None:
    from .noising import noising_command

    schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
    _parent(args.out)
    paths = noising_command(args.image, schedules, args.timesteps, args.image_size, args.frames, args.seed, args.out)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def cmd_data(args: argparse.Namespace) -> None:
    import json

    from .inspect_data import format_report, inspect_folder

    _parent(args.sheet)
    report = inspect_folder(args.path.expanduser(), args.image_size, args.channels, args.per_class, args.min_size,
                            args.sheet, args.cache_dir, progress=not args.quiet and not args.json)
    print(json.dumps(report) if args.json else format_report(report))


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    paths = run_demo(args.out, device=resolve_device(args.device), steps=args.steps, progress=not args.quiet)
    print("\nresults:")
    for kind, path in paths.items():
        print(f"  {kind:<16} {path}")


def cmd_eval(args: argparse.Namespace) -> None:
    from .api import load_run
    from .evaluation.classifier import load_classifier
    from .evaluation.evaluate import EvalSettings, default_num_samples, evaluate
    from .evaluation.report import summary_lines, write_report

    device = resolve_device(args.device)
    settings = EvalSettings(num_samples=args.num_samples or default_num_samples(device), sampler=args.sampler,
                            steps=_steps(args), guidance=args.guidance, eta=args.eta, seed=args.seed,
                            batch_size=args.batch_size, data=args.data, split=args.split,
                            inception=not args.no_inception,
                            inception_weights=str(args.inception_weights) if args.inception_weights else None)
    import warnings

    from .distributed import init, shutdown

    world, device = init(device)  # under torchrun: each rank samples and extracts its share; rank 0 measures
    try:
        classifier = load_classifier(args.classifier, device) if args.classifier else None
        run = load_run(args.checkpoint, device=device)
        if world.is_main:
            _parent(args.out / "eval.json")
        with _one_line_warnings(), warnings.catch_warnings():
            if not world.is_main:  # rank 0 alone reports
                warnings.simplefilter("ignore")
            result, images = evaluate(run, settings, classifier, args.cache_dir,
                                      log=(lambda _: None) if args.quiet else print, world=world)
    finally:
        shutdown(world)
    if result is None:  # not rank 0
        return
    paths = write_report(result, images, args.out)
    print("\n".join(summary_lines(result)))
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def cmd_classifier(args: argparse.Namespace) -> None:
    from .data import load_dataset
    from .evaluation.classifier import holdout, save_classifier, train_classifier

    with _one_line_warnings():
        train = load_dataset(args.data, args.image_size, args.channels, "train", cache_dir=args.cache_dir)
        if args.data.startswith("builtin:"):  # a fixed test split
            test = load_dataset(args.data, args.image_size, args.channels, "test", cache_dir=args.cache_dir)
        else:
            train, test = holdout(train)
    model = train_classifier(train, test, args.data, epochs=args.epochs, seed=args.seed, device=resolve_device(args.device),
                             progress=(lambda _: None) if args.quiet else print)
    _parent(args.out)
    path = save_classifier(model, args.out)
    print(f"held-out accuracy: {model.config.test_accuracy:.1%} on {len(test)} test images")
    print(f"classifier: {path}")


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Within the block, print warnings (such as a skipped image) as `ddpm: warning: ...`, one line each."""
    import warnings

    saved = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"ddpm: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = saved


def _steps(args: argparse.Namespace) -> int:
    """--steps, or the sampler's default (50 for ddpm and ddim, 20 for dpm++2m)."""
    from .sampler import DEFAULT_STEPS

    return args.steps or DEFAULT_STEPS[args.sampler]


def _parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
