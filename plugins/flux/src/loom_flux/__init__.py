"""Loom plugin for Flux.1 (Black Forest Labs): DiT, T5-XXL + CLIP-L, 16-channel VAE."""
