"""Where and how computation runs: the device and precision (device.py), ranks under torchrun (distributed.py), and
progress bars (progress.py)."""
