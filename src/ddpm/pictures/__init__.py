"""Pictures: image grids (grid.py), the noising animation (noising.py), denoising trajectories (trajectory.py),
matplotlib figures (figure.py), PNG metadata (pngmeta.py), and HTML pages (pages.py)."""
