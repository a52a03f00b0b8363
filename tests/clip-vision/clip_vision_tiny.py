"""Sizes the clip-vision tests share (a module of its own: ``conftest`` is not importable by
name reliably when the whole suite runs)."""

#: Redux at toy width: SigLIP features (32 wide) -> 48-wide text tokens.
REDUX_TEXT_DIM = 48
