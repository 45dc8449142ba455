"""Training: the PPO loop (``loop``) and what it is built from."""
