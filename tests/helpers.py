"""Small shared builders for the tests: a tiny config that trains in seconds."""

from ddpm.config import DataConfig, DiffusionConfig, ModelConfig, RunConfig, TrainConfig


def tiny_config(steps: int = 30, **train) -> RunConfig:
    return RunConfig(
        model=ModelConfig(image_size=16, channels=1, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                          attention_resolutions=(8,), num_heads=2),
        diffusion=DiffusionConfig(schedule="cosine", num_steps=100),
        train=TrainConfig(**{**dict(steps=steps, batch_size=16, lr=2e-3, warmup_steps=5, log_every=10, sample_every=0,
                                    save_every=0, precision="fp32"), **train}),
        data=DataConfig(source="builtin:animal-shapes"),
    )
