"""The README's figure tables are made from a ``./dev bench`` results file
(``benchmarks/render_readme.py``): a fixture results file rendered into a fixture README."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "bench"
SCRIPT = REPO / "benchmarks" / "render_readme.py"

_spec = importlib.util.spec_from_file_location("render_readme", SCRIPT)
assert _spec is not None and _spec.loader is not None
render_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_readme)


def results() -> dict:
    return json.loads((FIXTURES / "results.json").read_text())


def test_every_marked_table_is_made_from_the_results_and_the_rest_is_left_alone() -> None:
    text, kept = render_readme.render((FIXTURES / "README.in.md").read_text(), results())
    assert text == (FIXTURES / "README.out.md").read_text()
    assert kept == []


def test_rendering_again_gives_the_same_readme() -> None:
    once, _ = render_readme.render((FIXTURES / "README.in.md").read_text(), results())
    assert render_readme.render(once, results())[0] == once


def test_a_table_whose_benchmark_failed_or_is_missing_keeps_its_old_text() -> None:
    figures = results()
    figures["benchmarks"]["recovery"] = {"script": "benchmarks/bench_recovery.py", "args": [],
                                         "error": "exit 1: the pool did not come up"}
    del figures["benchmarks"]["idle"]
    readme = (FIXTURES / "README.in.md").read_text()
    text, kept = render_readme.render(readme, figures)
    assert kept == ["idle", "recovery"]
    assert "| the old recovery table |" in text
    assert "commit `4ea5ee2`" in text  # the others were made


@pytest.mark.parametrize("readme, why", [
    ("<!-- bench:speed -->\nx\n<!-- /bench:speed -->\n", "no table named 'speed'"),
    ("<!-- bench:gui -->\nx\n", "has no <!-- /bench:gui -->"),
    ("<!-- bench:gui -->\n<!-- /bench:scale -->\n", "has no <!-- /bench:gui -->"),
])
def test_markers_that_do_not_pair_up_or_name_no_table_are_refused(readme: str, why: str) -> None:
    with pytest.raises(render_readme.RenderError, match=why):
        render_readme.render(readme, results())


def test_the_script_rewrites_the_readme_in_place_and_says_in_one_line_what_is_wrong(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text((FIXTURES / "README.in.md").read_text())
    done = subprocess.run([sys.executable, str(SCRIPT), str(FIXTURES / "results.json"), str(readme)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert readme.read_text() == (FIXTURES / "README.out.md").read_text()

    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none.json"), str(readme)],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.startswith("render_readme: ") and missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr
