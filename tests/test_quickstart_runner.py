"""The quickstart's step runner: resume, failure naming, summary page (fake steps; the real pipeline is
exercised end to end in test_quickstart_e2e.py)."""
from pathlib import Path

from radjepa_cli.quickstart import QuickstartConfig, Step, run_quickstart


def _steps(out: Path):
    return lambda cfg: [
        Step("a", "first", ["a"], out / "a.done"),
        Step("b", "second", ["b"], out / "b.done", resume_args=["--resume"]),
        Step("c", "third", ["c"], out / "c.done"),
    ]


def test_failure_names_step_and_rerun_resumes(tmp_path, capsys):
    calls = []
    fail_b = {"on": True}

    def runner(step, log_dir):
        calls.append(list(step.args))
        if step.name == "b" and fail_b["on"]:
            return 3
        step.done_marker.write_text("ok")
        return 0

    cfg = QuickstartConfig(out=str(tmp_path))
    assert run_quickstart(cfg, _steps(tmp_path), runner) == 1
    assert "Step 'b' failed" in capsys.readouterr().out
    assert (tmp_path / "a.done").exists() and not (tmp_path / "c.done").exists()

    fail_b["on"] = False
    calls.clear()
    assert run_quickstart(cfg, _steps(tmp_path), runner) == 0
    # a is skipped, b resumes with --resume, c runs.
    assert calls == [["b", "--resume"], ["c"]]
    assert (tmp_path / "summary.html").exists() and (tmp_path / "summary.md").exists()


def test_step_that_exits_zero_without_output_is_a_failure(tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path))
    assert run_quickstart(cfg, _steps(tmp_path), lambda step, log: 0) == 1
