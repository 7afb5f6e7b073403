import json

from typer.testing import CliRunner

from radjepa_cli.cli import app
from radjepa_cli.data import embedded


def test_doctor_json_reports_machine_and_embedded_data():
    res = CliRunner().invoke(app, ["doctor", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["cpu_count"] >= 1
    assert info["versions"]["torch"]
    assert "kernels" in info and info["kernels"]
    assert set(info["scorers"]) == {"RadGraph", "CheXbert", "GREEN"}
    # Without local weights a scorer is reported unavailable, never silently substituted.
    for s in info["scorers"].values():
        assert s["available"] is False or s["path"]
    assert info["embedded_data"]["RG1 chest DICOM (pydicom-data)"] == str(embedded.rg1_dicom())


def test_doctor_table_renders():
    res = CliRunner().invoke(app, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "radjepa doctor" in res.output and "radjepa[gpu]" in res.output.replace("\n", "")
