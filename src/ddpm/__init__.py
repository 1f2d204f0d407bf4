"""ddpm: class- and text-conditional denoising diffusion models (Ho et al. 2020) that train, sample and evaluate.

The public API: `load_run` and `TrainedModel` (api.py), `train_run` (launch.py), the typed configurations
`RunConfig` (config.py) and `SamplingConfig` (diffusion/sampling.py). ARCHITECTURE.md maps the rest."""

from ddpm.api import TrainedModel, load_run
from ddpm.common.errors import UserError
from ddpm.common.pixels import tensor_to_pil
from ddpm.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig
from ddpm.diffusion.sampling import SamplingConfig
from ddpm.diffusion.schedule import NoiseSchedule
from ddpm.launch import train_run
from ddpm.network.unet import UNet
from ddpm.text.prompts import resolve_class

__all__ = [
    "DataConfig", "DiffusionConfig", "ModelConfig", "NoiseSchedule", "RunConfig", "SamplingConfig", "TrainConfig",
    "TrainedModel", "UNet", "UserError", "load_run", "resolve_class", "tensor_to_pil", "train_run",
]
__version__ = "0.1.0"
