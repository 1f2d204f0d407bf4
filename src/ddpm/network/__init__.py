"""The conditional UNet eps_theta(x_t, t, c) / v_theta: building blocks (layers.py), self-attention (attention.py) and
the backbone (unet.py)."""
