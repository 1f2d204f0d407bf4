"""The diffusion core, pure maths over tensors (never a file, never a network it owns): the noise schedule and its
closed forms (schedule.py), the forward process, prediction targets and loss (forward.py), classifier-free guidance
(guidance.py), the step rules and the one sampling loop (sampler.py), and the typed sampling options (sampling.py)."""
