"""ddpm: class-conditional denoising diffusion models (Ho et al. 2020) that train, sample and evaluate."""

from ddpm.api import TrainedModel, load_run
from ddpm.common.errors import UserError
from ddpm.common.pixels import tensor_to_pil
from ddpm.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.network.unet import UNet
from ddpm.text.prompts import resolve_class
from ddpm.training.resume import train_run

__all__ = [
    "DataConfig", "DiffusionConfig", "ModelConfig", "NoiseSchedule", "RunConfig", "TrainConfig", "TrainedModel",
    "UNet", "UserError", "load_run", "resolve_class", "tensor_to_pil", "train_run",
]
__version__ = "0.1.0"
