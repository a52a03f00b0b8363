"""Loom plugin: CLIP vision / SigLIP image encoders, unCLIP conditioning, Flux Redux."""
