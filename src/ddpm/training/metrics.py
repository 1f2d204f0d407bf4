"""What a run reports while it trains, and the pictures of it: the loss statistics between log points (summed over
ranks), metrics.jsonl and TensorBoard (rank 0), the preview grids, and the training-curve plot read back from
metrics.jsonl.

metrics.jsonl: one JSON object per log point: step, loss (mean of the ranks' batch means), lr, images_per_s
(every micro-batch counted), epoch, samples_seen, loss_q0..loss_q3 (the unweighted MSE for each quarter of t,
q0 = least noise), and what the loop passes as `fixed` (global_batch: images per optimiser step over all ranks and
micro-batches; threads: CPU threads torch used). Evaluations while training (watch.py) are records of their own:
{"step", "eval": {name: value}, "eval_metric": the score's name, "eval_score": lower is better, "eval_seconds"}
(read_metrics skips them; read_evals reads them).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path

import torch

from ddpm.common.errors import UserError
from ddpm.common.files import write_text_atomic
from ddpm.common.pixels import to_uint8
from ddpm.diffusion.forward import as_eps_model
from ddpm.diffusion.sampler import PerSampleNoise, sample
from ddpm.diffusion.sampling import PREVIEW_SAMPLING, SamplingConfig
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.network.unet import UNet
from ddpm.pictures.figure import figure
from ddpm.runtime.distributed import World, sum_over_ranks


class MetricsLog:
    """Loss statistics between log points, summed over ranks when logged (a collective: every rank calls `emit`
    at the same steps); rank 0 alone writes metrics.jsonl and TensorBoard. On resume, records after the snapshot
    (from the lost interval) are dropped, so each step is logged once."""

    def __init__(self, out_dir: Path, world: World, start_step: int, device: torch.device,
                 fixed: dict[str, int] | None = None, log: str = "tensorboard", config: dict | None = None) -> None:
        self.world, self.fixed = world, dict(fixed or {})  # fixed: values written in every record
        # accumulated on the training device: adding to them never waits for the device (no host sync per step)
        self.quarter = torch.zeros(4, dtype=torch.float64, device=device)
        self.quarter_n = torch.zeros(4, dtype=torch.float64, device=device)
        self.loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
        self.seen, self.t_log = 0, time.perf_counter()
        self.file, self.writer, self.wandb = None, None, None
        self.best_score = None
        if world.is_main:
            path = out_dir / "metrics.jsonl"
            kept = [line for line in (path.read_text().splitlines() if start_step and path.exists() else [])
                    if line.strip() and json.loads(line)["step"] <= start_step]
            write_text_atomic(path, "".join(line + "\n" for line in kept))  # the records before the snapshot
            scores = [r["eval_score"] for r in map(json.loads, kept) if r.get("eval_score") is not None]
            self.best_score: float | None = min(scores) if scores else None  # best.safetensors' score, on resume
            self.file = open(path, "a", encoding="utf-8")
            if log != "none":
                self.writer = _summary_writer(out_dir, purge_step=start_step + 1 if start_step else None)
            if log == "wandb":
                self.wandb = _wandb_run(out_dir, config or {}, start_step)

    def add(self, loss: torch.Tensor, per_sample: torch.Tensor, t: torch.Tensor, num_steps: int) -> None:
        """One micro-batch: `loss` its share of the step's loss (its mean / N), per_sample and t (B,)."""
        q = t * 4 // num_steps
        self.quarter.index_add_(0, q, per_sample.detach().double())
        self.quarter_n.index_add_(0, q, torch.ones_like(q, dtype=torch.float64))
        self.loss_sum += loss.detach().double()
        self.seen += len(t)

    def emit(self, step: int, n_steps: int, lr: float, epoch: int, samples_seen: int) -> dict:
        """The record of the last `n_steps` steps over all ranks (loss: mean of the ranks' batch means)."""
        loss_sum, quarter, quarter_n = (acc.cpu() for acc in (self.loss_sum, self.quarter, self.quarter_n))
        sum_over_ranks(self.world, loss_sum, quarter, quarter_n)
        elapsed = time.perf_counter() - self.t_log
        w = self.world.world_size
        record = {
            "step": step, "loss": float(loss_sum) / (n_steps * w), "lr": lr,
            "images_per_s": self.seen * w / elapsed, "epoch": epoch, "samples_seen": samples_seen, **self.fixed,
            **{f"loss_q{i}": float(quarter[i] / quarter_n[i]) for i in range(4) if quarter_n[i] > 0},
        }
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        self._scalars({f"train/{k}": v for k, v in record.items() if k != "step" and k not in self.fixed}, step)
        for acc in (self.quarter, self.quarter_n, self.loss_sum):
            acc.zero_()
        self.seen, self.t_log = 0, time.perf_counter()
        return record

    def log_eval(self, step: int, point) -> bool:
        """Write an evaluation (watch.EvalPoint) to metrics.jsonl and TensorBoard (eval/<name>); rank 0 only.
        Returns whether its score is the best so far (then the loop writes best.safetensors)."""
        record = {"step": step, "eval": point.values, "eval_metric": point.metric, "eval_score": point.score,
                  "eval_seconds": round(point.seconds, 3)}
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        self._scalars({f"eval/{k}": v for k, v in point.values.items()}, step)
        if point.score is None or not math.isfinite(point.score):
            return False
        if self.best_score is None or point.score < self.best_score:
            self.best_score = point.score
            return True
        return False

    def _scalars(self, values: dict[str, float], step: int) -> None:
        """Curves to TensorBoard and W&B (the fixed values are no curves: they stay in metrics.jsonl)."""
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def log_image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """A (C, H, W) float grid in [0, 1] to TensorBoard and W&B."""
        if self.writer is not None:
            self.writer.add_image(tag, grid, step)
        if self.wandb is not None:
            import wandb

            pixels = to_uint8(grid * 2 - 1).permute(1, 2, 0).cpu().numpy()  # (H, W, C)
            self.wandb.log({tag: wandb.Image(pixels)}, step=step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


@torch.no_grad()
def preview_grid(model: UNet, schedule: NoiseSchedule, rows: torch.Tensor, device: torch.device, prediction: str = "eps",
                 per_class: int = 4, sampling: SamplingConfig = PREVIEW_SAMPLING) -> torch.Tensor:
    """A (C, H, W) float grid in [0, 1], one row per condition in `rows` (class ids (R,) or embeddings (R, D)),
    drawn with `sampling` (PREVIEW_SAMPLING: 20 DDIM steps at the model's default guidance, seed 0), for TensorBoard
    while a run trains."""
    from torchvision.utils import make_grid

    cond = rows.repeat_interleave(per_class, dim=0)
    sampling = sampling.resolved(schedule.num_steps, model.config.cond)
    shape = (model.config.channels, model.config.image_size, model.config.image_size)
    x = sample(as_eps_model(model, schedule, prediction), schedule, cond, shape,
               PerSampleNoise(sampling.seed, range(len(cond))), sampling, null_id=model.null_id, device=device)
    return make_grid((x.float().cpu() + 1) / 2, nrow=per_class)


def _summary_writer(out_dir: Path, purge_step: int | None = None):
    """TensorBoard writer under out_dir/tb (events from purge_step on are dropped), or None without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tb"), purge_step=purge_step)



WANDB_ID = "wandb-run-id"  # the run's W&B id, so a resumed run continues the same W&B run


def _wandb_run(out_dir: Path, config: dict, start_step: int):
    """A W&B run logging into out_dir/wandb (project "ddpm", named after the run directory; WANDB_MODE, WANDB_PROJECT
    and the other WANDB_* variables apply). UserError when wandb is not installed."""
    try:
        import wandb
    except ImportError:
        raise UserError("--log wandb needs Weights & Biases: pip install wandb (or use --log tensorboard)") from None
    id_file = out_dir / WANDB_ID
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(8)  # W&B ids: [a-z0-9]
    write_text_atomic(id_file, run_id + "\n")
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "ddpm"), name=out_dir.name, id=run_id,
                      resume="allow", dir=str(out_dir), config=config)


QUARTERS = ("[0, T/4)", "[T/4, T/2)", "[T/2, 3T/4)", "[3T/4, T)")  # the t ranges of loss_q0..loss_q3


def read_metrics(metrics_path: Path) -> list[dict]:
    """The training records of a metrics JSON-lines file (blank lines and evaluation records skipped). Raises
    ValueError when there is none, when a line is not a JSON object, or when a record lacks "step" or "loss"."""
    records = []
    for n, rec in _records(metrics_path):
        if "eval" in rec:
            continue
        if "step" not in rec or "loss" not in rec:
            raise ValueError(f"{metrics_path}:{n} is not a record with 'step' and 'loss'")
        records.append(rec)
    if not records:
        raise ValueError(f"{metrics_path} is empty: it holds no metrics records")
    return records


def read_evals(metrics_path: Path) -> list[dict]:
    """The evaluation records of a metrics file (MetricsLog.log_eval), in order; [] when there are none."""
    return [r for _, r in _records(metrics_path) if isinstance(r.get("eval"), dict) and "step" in r]


def _records(metrics_path: Path) -> list[tuple[int, dict]]:
    """(line number, JSON object) of every non-blank line; ValueError naming the line for anything else."""
    records = []
    for n, line in enumerate(Path(metrics_path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{metrics_path}:{n} is not valid JSON: {e}") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{metrics_path}:{n} is not a record with 'step' and 'loss'")
        records.append((n, rec))
    return records


def ema_smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with bias correction (as TensorBoard's smoothing); non-finite values are skipped."""
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        if math.isfinite(v):
            acc, norm = weight * acc + (1 - weight) * v, weight * norm + (1 - weight)
        out.append(acc / norm if norm else float("nan"))
    return out


def plot_training_curve(metrics_path: Path, out_png: Path) -> Path:
    """Plot the loss of a metrics.jsonl against step: raw values faint, their EMA solid (lagging about 1/20 of the
    range), log y (linear if a value is <= 0), the learning rate on a right axis when logged. When the records hold
    loss_q0..loss_q3 (the eps-MSE for each quarter of t), a second panel plots them (smoothed). Writes and returns
    out_png."""
    records = read_metrics(metrics_path)
    steps = [r["step"] for r in records]
    quarters = [f"loss_q{i}" for i in range(4) if any(f"loss_q{i}" in r for r in records)]
    fig = figure(7.0, 6.5 if quarters else 3.8)
    axes = fig.subplots(2 if quarters else 1, 1, sharex=True, squeeze=False)[:, 0]
    marker = "o" if len(records) == 1 else None
    weight = max(0.0, 1 - 20 / len(records))  # the EMA lags by about 1/20 of the plotted range

    loss = [float(r["loss"]) for r in records]
    ax = axes[0]
    ax.plot(steps, loss, color="C0", alpha=0.3, lw=1, marker=marker, label="loss")
    ax.plot(steps, ema_smooth(loss, weight), color="C0", lw=2, label="loss (EMA)")
    ax.set(ylabel="loss", title="Training loss")
    if "lr" in records[0]:
        lr_ax = ax.twinx()
        lr_ax.plot(steps, [r.get("lr", float("nan")) for r in records], color="grey", ls=":", lw=1, label="lr")
        lr_ax.set_ylabel("learning rate", color="grey")
        lr_ax.tick_params(axis="y", colors="grey")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend(loc="upper right")

    if quarters:
        ax = axes[1]
        for i, key in enumerate(quarters):
            q = [float(r.get(key, float("nan"))) for r in records]
            label = f"{key[5:]}: t in {QUARTERS[int(key[-1])]}"
            ax.plot(steps, ema_smooth(q, weight), color=f"C{i + 1}", marker=marker, label=label)
        ax.set(ylabel="eps MSE (EMA)", title="Loss per quarter of t (q0 = least noise)")
        ax.legend(loc="upper right", fontsize=8)
    for ax in axes:
        vals = [y for line in ax.get_lines() for y in line.get_ydata() if math.isfinite(y)]
        if vals and min(vals) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[-1].set_xlabel("step")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    return out_png

