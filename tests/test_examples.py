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


def run_example(name: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_own_tsv_data_example_writes_a_graph_trains_on_it_and_saves_a_checkpoint(tmp_path: Path) -> None:
    out = run_example("own_tsv_data.py", "--steps", "60", cwd=tmp_path)
    assert "family: 60 entities, 2 relations" in out
    match = re.search(r"filtered test MRR (\d\.\d+)", out)
    assert match and 0.0 < float(match.group(1)) <= 1.0, out[-2000:]
    assert (tmp_path / "family" / "model.ckpt").is_file()


def test_predict_example_answers_by_label_and_with_trainer_predict(tmp_path: Path) -> None:
    out = run_example("predict.py", "--steps", "20", cwd=tmp_path)
    assert "best tails of (usa, embassy, ?)" in out and "score('" in out
    assert re.search(r"answered \d+ test queries with Trainer.predict", out), out[-2000:]


def test_export_example_reads_the_exported_files_back(tmp_path: Path) -> None:
    out = run_example("export.py", "--steps", "20", "--out", "emb", cwd=tmp_path)
    assert len(re.findall(r"near usa: ", out)) == 5, out[-2000:]
    assert (tmp_path / "emb" / "projector" / "projector_config.pbtxt").is_file()


def test_custom_model_example_scores_by_its_definition_and_trains(tmp_path: Path) -> None:
    out = run_example("custom_model.py", "--steps", "20", cwd=tmp_path)
    match = re.search(r"HolE on nations: filtered test MRR (\d\.\d+)", out)
    assert match and 0.0 < float(match.group(1)) <= 1.0, out[-2000:]


def test_the_readme_python_snippet_runs(tmp_path: Path) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    match = re.search(r"### In your own Lightning project\n\n```python\n(.*?)```", readme, re.S)
    assert match, "README lost its Python snippet"
    code = match.group(1).replace("max_steps=2000", "max_steps=20, enable_progress_bar=False, accelerator=\"cpu\"")
    code += "\nassert scores.shape == h.shape and bool(scores.isfinite().all())\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
