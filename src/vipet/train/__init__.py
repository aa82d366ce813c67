"""Training: losses, stages, trainer, checkpoints."""
