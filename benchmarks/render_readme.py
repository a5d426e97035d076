"""Make the README's figure tables from a ``./dev bench`` results file.

Each table lives between two markers, ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``
(NAME: throughput, latency, scale, gui, recovery, idle); everything between them is replaced
by a line naming the commit, date and machine the figures come from, and the table. The rest
of the README is left byte for byte. A marker for a benchmark the file lacks (or that failed)
keeps its old content, and the script says so.

    .venv/bin/python benchmarks/render_readme.py benchmarks/results/DATE-COMMIT.json [README.md]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]
_BLOCK = re.compile(r"(<!-- bench:([a-z]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.DOTALL)
_OPENING = re.compile(r"<!-- bench:([a-z]+) -->")


class RenderError(ValueError):
    """The README's markers do not pair up, or name no known table."""


def _num(value: float | None, digits: int = 1, unit: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{unit}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _throughput(rows: list[Row]) -> str:
    return _table(
        ["members on", "sandbox", "shards", "`xargs -P 2` /s", "PoolNet /s", "ratio to `xargs -P 2`",
         "host CPU per shard", "members' own CPU per shard", "gap between two 1 s shards, median / max"],
        [[r["member_loop"], "on" if r["sandbox"] else "off", f"{r['shards']:,}", _num(r["xargs_per_s"], 0),
          _num(r["poolnet_per_s"], 0), f"{r['ratio'] * 100:.0f} %", _num(r["host_cpu_ms_per_shard"], 2, " ms"),
          _num(r["member_cpu_ms_per_shard"], 2, " ms"),
          "–" if r["gap_median_ms"] is None else f"{r['gap_median_ms']:.1f} / {r['gap_max_ms']:.1f} ms"]
         for r in rows],
    )


def _latency(rows: list[Row]) -> str:
    return _table(
        ["members on", "sandbox", "submit to result of a one-shard task (median)"],
        [[r["member_loop"], "on" if r["sandbox"] else "off", _num(r["latency_median_ms"], 1, " ms")]
         for r in rows],
    )


def _scale(rows: list[Row]) -> str:
    return _table(
        ["members", "held", "joined / failed", "host CPU (one core)", "host RSS", "per member",
         "msgs in/s", "staleness p50 / p99", "shard start p99", "loop lag p99", "others' CPU"],
        [[f"{r['members']:,}", _num(r["held_s"], 0, " s"), f"{r['joined']:,} / {r['failed']:,}",
          _num(r["host_cpu_pct"], 1, " %"), _num(r["host_rss_mb"], 0, " MB"),
          _num(r["rss_kb_per_member"], 0, " KiB"), f"{r['messages_in_per_s']:,}",
          f"{r['staleness_p50_s']:.2f} / {r['staleness_p99_s']:.2f} s", _num(r["shard_start_p99_s"], 3, " s"),
          _num(r["loop_lag_p99_s"], 3, " s"), _num(r["others_cpu_pct"], 0, " %")]
         for r in rows],
    )


def _gui(figures: Row) -> str:
    return _table(
        ["devices", "seconds", "Qt thread busy (CPU time / wall)", "heartbeat lateness p99 / worst",
         "worst part of a gap spent working on the thread", "first batch", "then at rest: CPU / peak RSS"],
        [[f"{figures['devices']:,}", _num(figures["seconds"], 0, " s"), _num(figures["busy_pct"], 1, " %"),
          f"{figures['late_p99_ms']:.1f} / {figures['late_max_ms']:.0f} ms",
          _num(figures["own_stall_max_ms"], 1, " ms"), _num(figures["first_batch_ms"], 0, " ms"),
          "–" if "rest_cpu_pct" not in figures else
          f"{figures['rest_cpu_pct']:.2f} % / {figures['rest_rss_mib']:.0f} MiB"]],
    )


def _recovery(figures: Row) -> str:
    return _table(
        ["task", "undisturbed (same run)", "one member SIGKILLed", "shards run again",
         "kill to their new start, min / max"],
        [[f"{figures['shards']} shards of {figures['shard_s']:g} s, killed {figures['kill_after_s']:g} s in",
          _num(figures["undisturbed_s"], 1, " s"), _num(figures["with_kill_s"], 1, " s"),
          str(figures["shards_rerun"]),
          f"{_num(figures['recovery_min_s'], 2)} / {_num(figures['recovery_max_s'], 2)} s"]],
    )


def _idle(rows: list[Row]) -> str:
    return _table(
        ["member", "on", "CPU at rest (one core)", "resident memory", "with its sandboxes (summed)"],
        [[str(r["member"]), r["member_loop"], _num(r["cpu_pct"], 2, " %"), _num(r["rss_mib"], 0, " MiB"),
          _num(r.get("tree_rss_mib"), 0, " MiB")]
         for r in rows],
    )


# table name -> (the benchmark whose figures it shows, how)
TABLES: dict[str, tuple[str, Callable[[Any], str]]] = {
    "throughput": ("throughput", _throughput),
    "latency": ("throughput", _latency),
    "scale": ("scale", _scale),
    "gui": ("gui", _gui),
    "recovery": ("recovery", _recovery),
    "idle": ("idle", _idle),
}


def provenance(results: Row, benchmark: Row) -> str:
    """The line that says where a table's figures come from."""
    machine = results["machine"]
    day = results["date"][:10]
    args = " ".join(benchmark["args"])
    return (f"From `./dev bench` on commit `{results['commit']}`, {day}, {machine['cpu_model']} "
            f"({machine['cores']} cores, load average {results['load_average_before'][0]:g} at the "
            f"start): `{benchmark['script']} {args}`.")


def render(readme: str, results: Row) -> tuple[str, list[str]]:
    """The README with every marked table made from ``results``, and the names of the tables
    kept as they were (their benchmark is missing from the file, or failed)."""
    names = _OPENING.findall(readme)
    if unknown := sorted(set(names) - set(TABLES)):
        raise RenderError(f"no table named {unknown[0]!r}; they are {', '.join(TABLES)}")
    paired = [m.group(2) for m in _BLOCK.finditer(readme)]
    if unclosed := [n for n in names if names.count(n) != paired.count(n)]:
        raise RenderError(f"<!-- bench:{unclosed[0]} --> has no <!-- /bench:{unclosed[0]} --> after it")
    kept: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        source, make = TABLES[name]
        benchmark = results.get("benchmarks", {}).get(source)
        if benchmark is None or "figures" not in benchmark:
            kept.append(name)
            return match.group(0)
        body = provenance(results, benchmark) + "\n\n" + make(benchmark["figures"]) + "\n"
        return match.group(1) + body + match.group(4)

    return _BLOCK.sub(replace, readme), kept


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print("usage: render_readme.py RESULTS.json [README.md]", file=sys.stderr)
        return 2
    readme_path = Path(argv[1]) if len(argv) == 2 else Path(__file__).resolve().parent.parent / "README.md"
    try:
        results = json.loads(Path(argv[0]).read_text())
        text, kept = render(readme_path.read_text(), results)
    except (OSError, ValueError, KeyError) as exc:  # json's errors are ValueErrors
        print(f"render_readme: {exc}", file=sys.stderr)
        return 1
    readme_path.write_text(text)
    for name in kept:
        print(f"render_readme: {name}: no figures in {argv[0]}; its table is left as it was", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
