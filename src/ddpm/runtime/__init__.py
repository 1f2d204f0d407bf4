"""Where and how computation runs: the device, precision and CPU threads (device.py), ranks under torchrun
(distributed.py), and progress bars (progress.py)."""
