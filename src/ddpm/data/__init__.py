"""Images in, uint8 tensors out: the built-in dataset (builtin.py), class folders and captions (folder.py), decoding
and crops (transforms.py), the decoded-image cache (cache.py), datasets (dataset.py), seeded batch order
(batches.py), and `ddpm data inspect` (inspect.py)."""
