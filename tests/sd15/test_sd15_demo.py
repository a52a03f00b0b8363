"""``loom demo`` on a machine with no model files: builds once, runs, prints the PNG path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from loom_sd15.demo import learn_bpe, write_demo_tokenizer
from sd15_markers import needs_samplers


def _loom(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "loom"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "loom.cli.main"]
    return subprocess.run(
        ["sh", "-c", 'umask 022 && exec "$@"', "loom", *command, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_tokenizer_is_deterministic_and_clip_shaped(tmp_path):
    from loom_sd15.tokenizer import load_tokenizer, special_tokens

    assert learn_bpe(["bottle", "bottle", "galaxy"], 5) == learn_bpe(
        ["bottle", "bottle", "galaxy"], 5
    )
    size = write_demo_tokenizer(tmp_path / "tok")
    tokenizer = load_tokenizer(tmp_path / "tok")
    assert special_tokens(tokenizer) == (size - 2, size - 1)
    ids = tokenizer("beautiful glass bottle")["input_ids"]
    assert len(ids) == 5  # start, three learnt words, end


@needs_samplers
def test_loom_demo_prints_a_png_path(tmp_path):
    first = _loom("demo", "--steps", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # not silent while it works: the model load and the sampler's steps, as `loom run` shows
    assert "loaded checkpoint loom-demo-tiny.safetensors" in first.stderr
    assert re.search(r"node 3 \(KSampler\): 100%.* 2/2 ", first.stderr)
    path = Path(first.stdout.split()[-1])
    assert path.suffix == ".png" and path.is_file()
    checkpoint = tmp_path / "models" / "checkpoints" / "loom-demo-tiny.safetensors"
    built = checkpoint.stat().st_mtime_ns
    second = _loom("demo", "--steps", "2", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert checkpoint.stat().st_mtime_ns == built  # cached, not rebuilt
    # the files it wrote follow the umask (022 here), not safetensors' owner-only 0600
    for written in (checkpoint, path, tmp_path / "models/tokenizers"):
        assert written.stat().st_mode & 0o777 in (0o644, 0o755), written
    from PIL import Image

    a, b = (Image.open(p.split()[-1]).tobytes() for p in (first.stdout, second.stdout))
    assert a == b  # same seed, same image


@needs_samplers
def test_demo_steps_out_of_range_name_the_problem(tmp_path, monkeypatch, capsys):
    from loom.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--steps", "0"]) == 2
    assert "Invalid value for '--steps': 0 is not in the range x>=1" in capsys.readouterr().err
    assert main(["demo", "--steps", "100000"]) == 1
    err = capsys.readouterr().err
    assert "node 3 (KSampler): Value 100000 bigger than max of 10000: steps" in err
    assert "Traceback" not in err
