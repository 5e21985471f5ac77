"""songtrace.model: the model task interface, the demo DiT, adapters for real model families, the checkpoint
registry, training and generation."""
