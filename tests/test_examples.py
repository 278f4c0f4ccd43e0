"""The scripts in examples/ run to the end as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_margin_loss_subclass_example_trains_and_reports_a_filtered_mrr(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "margin_loss_subclass.py"), "--steps", "40"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"filtered test MRR (\d\.\d+)", result.stdout)
    assert match and 0.0 < float(match.group(1)) <= 1.0, result.stdout[-2000:]


def test_the_readme_python_snippet_runs(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    match = re.search(r"### In your own Lightning project\n\n```python\n(.*?)```", readme, re.S)
    assert match, "README lost its Python snippet"
    code = match.group(1).replace("max_steps=2000", "max_steps=20, enable_progress_bar=False, accelerator=\"cpu\"")
    code += "\nassert scores.shape == h.shape and bool(scores.isfinite().all())\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
