"""Fitting the network: the loop (loop.py), the optimisation policy (optim.py), one optimiser step's mechanics
(step.py: micro-batches, fp16 loss scaling, clipping, the EMA), the training state and its capture (state.py), what
is logged while training (metrics.py), and the two files a run writes: snapshots (snapshot.py) and the checkpoint
(checkpoint.py)."""
