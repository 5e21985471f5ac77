"""songtrace: training-data attribution and opt-out unlearning for text-to-music latent diffusion models."""

__version__ = "0.1.0"
