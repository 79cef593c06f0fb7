from typer.testing import CliRunner

import interp
from interp.cli import app


def test_cli_trace_writes_table_spec_and_figures(tmp_path):
    out = tmp_path / "t"
    result = CliRunner().invoke(app, ["trace", "--model", "tiny-llama", "--prompts", "test",
                                      "--templates", "1", "--limit", "3", "--samples", "2",
                                      "--kinds", "resid,mlp,attn,head", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Strongest sites" in result.output and "suggested MLP layers" in result.output
    for name in ("cells.csv", "prompts.json", "spec.json", "trace.html", "trace_prompt0.html"):
        assert (out / name).exists()
    again = interp.TraceResult.load(out)
    assert len(again.prompts) == 3 and again.spec["corruption"]["samples"] == 2
    bad = CliRunner().invoke(app, ["trace", "--model", "tiny-llama", "--kinds", "mlpp",
                                   "--limit", "1", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown kind 'mlpp'" in bad.output
