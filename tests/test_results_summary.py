"""neurocl results --summary: mean +- sd of the summary metrics per condition (what differs
between runs, the seed aside), labelled readably."""

from __future__ import annotations

import json
import statistics

from click.testing import CliRunner
from sweep_fixtures import TINY_PROTOCOL

from neurocl.cli import main
from neurocl.results import condition_table
from neurocl.run import run_protocol


def test_conditions_are_the_settings_that_differ_and_the_numbers_are_the_runs(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_PROTOCOL)
    out = tmp_path / "out"
    finals: dict[str, list[float]] = {"naive": [], "ewc": []}
    for rule in finals:
        for seed in (1, 2, 3):
            rd = run_protocol(p, out, [f"rules=[{rule}]", f"seed={seed}", "execution.progress=none"])
            finals[rule].append(json.loads(rd.summary.read_text())["final_average_accuracy"])
    table = condition_table(out)
    assert list(table["runs"]) == [3, 3]
    by_label = {row["condition"]: row for _, row in table.iterrows()}
    # Rules read as name(settings), not as the repr of their dicts.
    ewc_label = "rules=[ewc(batches=None, fisher=empirical, lambda=100.0, mode=separate, samples=None)]"
    assert set(by_label) == {ewc_label, "rules=[naive]"}
    ewc = by_label[ewc_label]
    assert ewc["final_average_accuracy mean"] == statistics.mean(finals["ewc"])
    assert abs(ewc["final_average_accuracy sd"] - statistics.stdev(finals["ewc"])) < 1e-12
    assert by_label["rules=[naive]"]["final_average_accuracy mean"] == statistics.mean(finals["naive"])
    # Grouped by a chosen key instead; an unknown key names those that vary.
    assert list(condition_table(out, by=["seed"])["runs"]) == [2, 2, 2]
    res = CliRunner().invoke(main, ["results", str(out), "--summary"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:2] == ["condition", "runs"] and len(lines) == 3
    assert any(line.startswith("rules=[naive]") and " 3 " in line and "+-" in line for line in lines)
    res = CliRunner().invoke(main, ["results", str(out), "--summary", "--by", "rules.0.nme"])
    assert res.exit_code == 2 and "no run has rules.0.nme; keys that vary: rules, seed" in res.output
