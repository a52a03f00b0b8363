"""Loom's SDXL model family plugin (``loom-sdxl``)."""
