"""Entry points of the PyTorch baselines (`amnet.torch_baselines`)."""
