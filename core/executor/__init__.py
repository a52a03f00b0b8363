"""Prompt validation, scheduling, caching, execution, and the shared queue and history."""
