"""One function per subcommand: turn parsed arguments into library calls and print where results went."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Iterator

from ddpm.common.errors import UserError
from ddpm.common.ostext import as_text
from ddpm.common.outputs import check_output
from ddpm.diffusion.sampling import SamplingConfig
from ddpm.runtime.device import resolve_device


def cmd_train(args: argparse.Namespace) -> None:
    import sys

    from ddpm.cli.train_flags import FLAG_NAMES, flags_table
    from ddpm.launch import resume_base, train_run
    from ddpm.resolve import resolve_config
    from ddpm.runtime.distributed import check_launcher, env_rank

    check_launcher("train")  # before anything prints: every task of a refused srun would think it is rank 0
    device = resolve_device(args.device)
    config_file = args.config or resume_base(args.out, args.resume)
    resolution = resolve_config(flags_table(args), config_file, device, FLAG_NAMES)
    main = env_rank() == 0  # under torchrun, rank 0 alone prints
    if args.print_config:
        if main:
            for note in resolution.notes:
                sys.stderr.write(note + "\n")
            print(resolution.config.to_json())
        return
    if main:
        for note in resolution.notes:
            print(note)
    tc = resolution.config.train
    evaluator = None
    if tc.eval_every and main:  # rank 0 alone evaluates
        from ddpm.evaluation.during import TrainingEval

        evaluator = TrainingEval(args.out, tc.eval_samples, tc.eval_classifier, args.cache_dir, device)
    with _one_line_warnings():
        run = train_run(resolution.config, args.out, device=device, progress=not args.quiet,
                        cache_dir=args.cache_dir, resume=args.resume, evaluator=evaluator)
    if not main:
        return
    import shlex

    prompt = ""
    if run.conditioning != "none":  # a text model: its first caption (a folder name may be no caption); else a class
        prompt = f" {shlex.quote(run.run_captions()[0] if run.conditioning == 'text' else run.class_names[0])}"
    print(f"run directory: {_shown(args.out)}")
    print(f"sample from it: ddpm sample --checkpoint {shlex.quote(_shown(args.out))}{prompt} -n 8")


def sampling_from_args(args: argparse.Namespace) -> SamplingConfig:
    """The SamplingConfig of the flags that parser.add_sampling_flags added (they carry its field names)."""
    return SamplingConfig(**{name: getattr(args, name) for name in SamplingConfig.__dataclass_fields__
                             if hasattr(args, name)})


def cmd_sample(args: argparse.Namespace) -> None:
    from ddpm.api import load_run, run_files
    from ddpm.common.pixels import tensor_to_pil, to_uint8
    from ddpm.pictures.grid import make_grid
    from ddpm.pictures.pngmeta import save_png
    from ddpm.pictures.trajectory import Trajectory, save_trajectory, trajectory_paths
    from ddpm.runtime.progress import SamplingBar, chain
    from ddpm.text.prompts import read_prompts_file

    if args.trajectory and args.trajectory.suffix.lower() != ".gif":
        raise UserError(f"--trajectory {args.trajectory}: give a .gif path (the x_0 strip PNG is written beside it)")
    read = [*run_files(args.checkpoint), *([args.prompts_file] if args.prompts_file else [])]
    check_output(args.out, "--out", force=args.force, protected=read)
    if args.images is not None:
        check_output(args.images, "--images", folder=True, force=args.force, protected=read)
    for path in trajectory_paths(args.trajectory).values() if args.trajectory else ():
        check_output(path, "--trajectory", force=args.force, protected=read)
    prompts = list(args.prompt) + (read_prompts_file(args.prompts_file) if args.prompts_file else [])
    run = load_run(args.checkpoint, device=resolve_device(args.device))
    sampling = run.effective_sampling(sampling_from_args(args))
    rows = len(prompts) or (1 if run.conditioning == "none" else len(run.class_names))
    traj = Trajectory(sampling.steps) if args.trajectory else None
    with _one_line_warnings(), SamplingBar(rows * args.n, sampling.batch_size, sampling.steps, enabled=not args.quiet) as bar:
        out = run.sample_prompts(prompts or None, args.n, sampling, negative=args.negative, strict=args.strict,
                                 callback=chain(bar, traj))
    for row in out.rows if prompts else []:
        print(_describe_row(row))
    if out.negative is not None:
        print("negative: " + _describe_row(out.negative))
    meta = run.provenance(sampling, _shown(args.checkpoint), prompts=[r.prompt for r in out.rows],
                          drawn=[r.label for r in out.rows], negative=out.negative.prompt if out.negative else "",
                          n=args.n)
    labels = [_short(r.label if r.mode != "text" else r.prompt) for r in out.rows]
    _parent(args.out)
    save_png(make_grid(to_uint8(out.images), nrow=args.n, labels=labels, scale=args.scale), args.out, meta)
    print(f"grid: {_shown(args.out)}")
    if args.images is not None:
        args.images.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(tensor_to_pil(out.images)):
            r, j = divmod(k, args.n)
            save_png(image, args.images / f"row{r}-{j}.png",
                     {**meta, "prompt": out.rows[r].prompt, "drawn": out.rows[r].label, "row": r, "j": j})
        print(f"images: {_shown(args.images)}")
    if traj is not None:
        _parent(args.trajectory)
        for kind, path in save_trajectory(traj, args.trajectory, args.n, labels, args.scale).items():
            print(f"{kind}: {_shown(path)}")


def cmd_edit(args: argparse.Namespace) -> None:
    from ddpm.diffusion.editing import image_to_image_steps

    run = _edit_run(args, args.image)
    sampling = run.effective_sampling(sampling_from_args(args))
    steps = image_to_image_steps(sampling.steps, args.strength)
    with _one_line_warnings(), _bar(args, len(args.image) * args.n, sampling, steps) as bar:
        out = run.edit(args.image, args.prompt, args.n, args.strength, sampling, negative=args.negative,
                       strict=args.strict, callback=bar)
    _save_edit(args, run, out, sampling, mode="edit", strength=args.strength)


def cmd_inpaint(args: argparse.Namespace) -> None:
    from ddpm.diffusion.editing import inpainting_steps

    run = _edit_run(args, [args.image, *([args.mask] if args.mask else [])])
    sampling = run.effective_sampling(sampling_from_args(args))
    steps = inpainting_steps(sampling.steps, args.jump, args.repeats)
    with _one_line_warnings(), _bar(args, args.n, sampling, steps) as bar:
        out = run.inpaint(args.image, args.mask, args.prompt, args.n, sampling, box=args.box, jump=args.jump,
                          repeats=args.repeats, negative=args.negative, strict=args.strict, callback=bar)
    _save_edit(args, run, out, sampling, mode="inpaint", box=list(args.box) if args.box else None,
               mask=_shown(args.mask) if args.mask else None, jump=args.jump, repeats=args.repeats)


def _edit_run(args: argparse.Namespace, inputs: list[Path]):
    """Check the outputs (never an input or the run's files), then load the run."""
    from ddpm.api import load_run, run_files

    check_output(args.out, "--out", force=args.force, protected=[*run_files(args.checkpoint), *inputs])
    return load_run(args.checkpoint, device=resolve_device(args.device))


def _bar(args: argparse.Namespace, images: int, sampling: SamplingConfig, steps: int):
    from ddpm.runtime.progress import SamplingBar

    return SamplingBar(images, sampling.batch_size, max(steps, 1), enabled=not args.quiet)


def _save_edit(args: argparse.Namespace, run, out, sampling: SamplingConfig, **fields) -> None:
    """The grid (each input, then its results) with its settings and the inputs' SHA-256 in the PNG."""
    from ddpm.common.pixels import to_uint8
    from ddpm.pictures.editing import edit_grid, masked
    from ddpm.pictures.pngmeta import save_png

    row = out.rows[0]
    if args.prompt is not None:
        print(_describe_row(row))
    if out.negative is not None:
        print("negative: " + _describe_row(out.negative))
    images = [args.image] if isinstance(args.image, Path) else args.image
    meta = run.provenance(sampling, _shown(args.checkpoint), prompt=row.prompt, drawn=row.label,
                          negative=out.negative.prompt if out.negative else "", n=args.n,
                          images=[_shown(p) for p in images], input_sha256=out.input_sha256,
                          **{k: v for k, v in fields.items() if v is not None})
    inputs = to_uint8(out.inputs) if out.mask is None else masked(to_uint8(out.inputs), out.mask)
    labels = [_short(p.name, 20) for p in images]
    _parent(args.out)
    save_png(edit_grid(inputs, to_uint8(out.images), labels, args.scale), args.out, meta)
    print(f"grid: {_shown(args.out)}")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from ddpm.api import load_run, run_files
    from ddpm.common.pixels import to_uint8
    from ddpm.pictures.editing import morph_paths, save_morph
    from ddpm.pictures.pngmeta import save_png

    if args.out.suffix.lower() != ".gif":
        raise UserError(f"--out {args.out}: give a .gif path (the PNG strip is written beside it)")
    for path in morph_paths(args.out).values():
        check_output(path, "--out", force=args.force, protected=run_files(args.checkpoint))
    run = load_run(args.checkpoint, device=resolve_device(args.device))
    sampling = run.effective_sampling(sampling_from_args(args))
    with _one_line_warnings(), _bar(args, args.frames, sampling, sampling.steps) as bar:
        morph = run.interpolate(args.start, args.end, args.frames, sampling, seed_a=args.seed_a, seed_b=args.seed_b,
                                strict=args.strict, callback=bar)
    for end in (morph.start, morph.end) if args.start is not None else ():
        print(_describe_row(end))
    meta = run.provenance(sampling, _shown(args.checkpoint), mode="interpolate", prompt_from=morph.start.prompt,
                          prompt_to=morph.end.prompt, drawn_from=morph.start.label, drawn_to=morph.end.label,
                          seed_a=morph.seed_a, seed_b=morph.seed_b, frames=args.frames)
    _parent(args.out)
    paths, strip = save_morph(to_uint8(morph.frames), args.out, args.scale)
    save_png(strip, paths["strip"], meta)
    for kind, path in paths.items():
        print(f"{kind}: {_shown(path)}")


def cmd_serve(args: argparse.Namespace) -> None:
    from ddpm.api import load_run
    from ddpm.serve import Access, check_port, serve

    access = Access.for_server(args.host, args.port, tuple(args.allow_origin))  # options first, then the model
    check_port(args.host, args.port)
    run = load_run(args.checkpoint, device=resolve_device(args.device))
    serve(run, _shown(args.checkpoint), host=args.host, port=args.port, max_waiting=args.max_queue,
          access=access)


def _describe_row(row) -> str:
    if row.mode == "class":
        return f"{row.prompt!r} -> {row.label} (similarity {row.similarity:.2f})"
    near = f" (nearest training caption: {row.nearest[0][0]!r} {row.nearest[0][1]:.2f})" if row.nearest else ""
    return f"{row.prompt!r} -> text embedding{near}"


def _shown(path: str | Path) -> str:
    """A path as printed and as written into a PNG: text (common/ostext), whatever bytes the file system allows."""
    return as_text(str(path))


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_noise(args: argparse.Namespace) -> None:
    from ddpm.data.builtin import example_image
    from ddpm.data.transforms import read_image
    from ddpm.pictures.noising import named_schedules, noising_paths, save_noising

    schedules = named_schedules([s.strip() for s in args.schedules.split(",") if s.strip()], args.timesteps)
    read = [args.image] if args.image else []
    check_output(args.out, "--out", force=args.force, protected=read)  # a file name, before the names beside it
    for path in noising_paths(args.out).values():
        check_output(path, "--out", force=args.force, protected=read)
    image = read_image(args.image, args.image_size) if args.image else example_image(args.image_size)
    _parent(args.out)
    for kind, path in save_noising(image, schedules, args.out, num_frames=args.frames, seed=args.seed).items():
        print(f"{kind}: {_shown(path)}")


def cmd_data(args: argparse.Namespace) -> None:
    import json

    from ddpm.data.inspect import format_report, inspect_folder

    check_output(args.sheet, "--sheet", force=args.force, protected=[args.path])
    _parent(args.sheet)
    report = inspect_folder(args.path.expanduser(), args.image_size, args.channels, args.per_class, args.min_size,
                            args.sheet, args.cache_dir, progress=not args.quiet and not args.json)
    print(json.dumps(report) if args.json else format_report(report))


def cmd_demo(args: argparse.Namespace) -> None:
    from ddpm.demo import run_demo, run_text_demo

    demo = run_text_demo if args.text else run_demo
    out = args.out or Path("runs/demo-text" if args.text else "runs/demo")
    paths = demo(out, device=resolve_device(args.device), steps=args.steps, progress=not args.quiet)
    print("\nresults:")
    for kind, path in paths.items():
        print(f"  {kind:<16} {_shown(path)}")


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    from ddpm.api import run_files
    from ddpm.evaluation.evaluate import EvalSettings, default_num_samples, evaluate_checkpoint
    from ddpm.evaluation.report import summary_lines, write_report
    from ddpm.runtime.distributed import check_launcher, env_rank

    check_launcher("eval")
    device = resolve_device(args.device)
    n = args.num_samples if args.num_samples is not None else default_num_samples(device)  # 0 is refused, not default
    settings = EvalSettings(num_samples=n,
                            sampling=sampling_from_args(args), data=args.data, split=args.split,
                            inception=not args.no_inception, feature_precision=args.feature_precision,
                            inception_weights=str(args.inception_weights) if args.inception_weights else None)
    if env_rank() == 0:
        read = [*run_files(args.checkpoint), *(p for p in (args.classifier, args.inception_weights) if p)]
        check_output(args.out, "--out", folder=True, force=args.force, protected=read)
        _writable(args.out)  # fail before the long part, and leave nothing behind when loading fails
    with _one_line_warnings():
        result, images = evaluate_checkpoint(args.checkpoint, settings, args.classifier, device, args.cache_dir,
                                             log=_log(args.quiet, args.json), progress=not args.quiet)
    if result is None:  # not rank 0
        return
    paths = write_report(result, images, args.out)
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=True))
        return
    print("\n".join(summary_lines(result)))
    for kind, path in paths.items():
        print(f"{kind}: {_shown(path)}")


def cmd_classifier(args: argparse.Namespace) -> None:
    from ddpm.evaluation.classifier import classifier_splits, save_classifier, train_classifier

    check_output(args.out, "--out", force=args.force, protected=[Path(args.data)] if Path(args.data).is_dir() else [])
    with _one_line_warnings():
        train, test = classifier_splits(args.data, args.image_size, args.channels, args.cache_dir, progress=not args.quiet)
    model = train_classifier(train, test, args.data, epochs=args.epochs, seed=args.seed, device=resolve_device(args.device),
                             progress=(lambda _: None) if args.quiet else print)
    _parent(args.out)
    path = save_classifier(model, args.out)
    print(f"held-out accuracy: {model.config.test_accuracy:.1%} on {len(test)} test images")
    print(f"classifier: {_shown(path)}")


def _log(quiet: bool, to_stderr: bool):
    """Where progress messages go: nowhere (--quiet), stderr (--json keeps stdout for the JSON) or stdout."""
    import sys

    if quiet:
        return lambda _: None
    return (lambda line: print(line, file=sys.stderr)) if to_stderr else print


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Within the block, print warnings (such as a skipped image) as `ddpm: warning: ...`, one line each."""
    import warnings

    saved = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"ddpm: warning: {as_text(str(message))}\n"
    try:
        yield
    finally:
        warnings.formatwarning = saved


def _writable(folder: Path) -> None:
    """A UserError unless `folder` exists as a writable folder or could be created; creates nothing."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {folder}: {probe} is not a writable folder")


def _parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
