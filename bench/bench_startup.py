"""`loom run` start-up: wall time of the whole command for tiny graphs (issue 2: < 1 s).

Two graphs: one that never needs torch (PrimitiveInt -> PreviewAny) and one that does
(EmptyImage -> SaveImage), so the cost of importing torch shows on its own. Then the commands
that only need the node registry (`loom nodes --json`, `loom validate`), which must not import
torch (issue 15), and whether registering every plugin imports torch. Best of 5.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRAPHS = {
    "no torch (PrimitiveInt -> PreviewAny)": {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    },
    "torch (EmptyImage -> SaveImage)": {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "bench"},
        },
    },
}


def loom_command() -> list[str]:
    script = Path(sys.executable).parent / "loom"
    return [str(script)] if script.exists() else [sys.executable, "-m", "loom.cli.main"]


def best_wall(args: list[str], cwd: Path, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(args, cwd=cwd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        python = best_wall([sys.executable, "-c", "pass"], cwd)
        torch_import = best_wall([sys.executable, "-c", "import torch"], cwd)
        print("| command | best wall s |")
        print("|---|---|")
        print(f"| python -c pass (interpreter floor) | {python:.2f} |")
        print(f"| python -c 'import torch' | {torch_import:.2f} |")
        for name, graph in GRAPHS.items():
            path = cwd / "wf.json"
            path.write_text(json.dumps(graph))
            print(
                f"| loom run, {name} | {best_wall([*loom_command(), 'run', str(path), '-q'], cwd):.2f} |"
            )
        nodes = best_wall([*loom_command(), "nodes", "--json"], cwd)
        print(f"| loom nodes --json | {nodes:.2f} |")
        validate = best_wall([*loom_command(), "validate", str(path)], cwd)
        print(f"| loom validate, {name} | {validate:.2f} |")
        print(f"| registering every plugin imports torch | {registration_imports_torch()} |")
    return 0


def registration_imports_torch() -> str:
    probe = (
        "import sys; from loom.runtime import Runtime; Runtime().registry; "
        "print('yes' if 'torch' in sys.modules else 'no')"
    )
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    raise SystemExit(main())
