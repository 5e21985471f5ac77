"""Adapters that put real Stable-Audio-family models behind `songtrace.model.interface.DiffusionModel`."""
