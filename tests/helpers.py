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


def untrained_run(out, num_classes: int = 10):
    """A run directory holding a randomly initialised tiny model (no training, no dataset read): for tests of what
    sits around the model (web UI, pages, pictures). The layers the UNet zero-initialises are drawn at random too, so
    the output depends on the class. Returns out."""
    import copy
    from pathlib import Path

    import torch

    from ddpm.network.unet import UNet
    from ddpm.training.checkpoint import CHECKPOINT_NAME, save_checkpoint

    names = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"][:num_classes]
    config = tiny_config()
    config.data.class_names, config.model.num_classes = names, len(names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = UNet(config.model).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0, 0.05)
    config.save(out / "config.json")
    save_checkpoint(out / CHECKPOINT_NAME, config, model, copy.deepcopy(model), 0)
    return out


def serving(make_app):
    """A context manager running uvicorn in a thread on a free loopback port: make_app(port) -> the ASGI app (the
    port first, since the app's Host check names it). Yields the base URL; stops the server on exit."""
    import contextlib
    import socket
    import threading
    import time

    import uvicorn

    @contextlib.contextmanager
    def running():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(make_app(port), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        end = time.monotonic() + 30
        while not srv.started:
            assert time.monotonic() < end and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            srv.should_exit = True
            thread.join(10)

    return running()


def wait_for_job(client, job_id: str, timeout: float = 60) -> dict:
    """Poll the web UI's /api/jobs/ID through a TestClient until the job is done or failed; its last status."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")
