import base64
import json

import cv2
import numpy as np
import pytest

from facetrain.cli import main
from facetrain.report.html import HtmlReport
from facetrain.report.run_report import verification_rows
from facetrain.training.logger import plot_curves


def test_html_embeds_png_and_escapes_text(tmp_path):
    png = tmp_path / "x.png"
    cv2.imwrite(str(png), np.full((4, 4, 3), 200, np.uint8))
    report = HtmlReport("a <title>")
    report.text("1 < 2")
    assert report.image(png, "cap")
    assert not report.image(tmp_path / "missing.png")
    page = report.render()
    assert "a &lt;title&gt;" in page and "1 &lt; 2" in page
    assert base64.b64encode(png.read_bytes()).decode() in page


def test_verification_rows_put_average_last():
    header, rows = verification_rows({"average": {"accuracy": 0.9}, "lfw": {"accuracy": 0.95, "pairs": 6000}})
    assert header == ["set", "accuracy", "pairs"]
    assert [r[0] for r in rows] == ["lfw", "average"]


def test_report_cli_on_a_run_folder(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"arch": "ir_18", "head": "adaface", "epochs": 2}))
    # the names the training logger writes (train_loss, lr, <set>_val_acc, val_acc)
    (tmp_path / "metrics.csv").write_text("step,epoch,name,value\n1,0,train_loss,20.5\n1,0,lr,0.1\n"
                                          "2,1,train_loss,15.0\n2,1,lr,0.01\n2,1,lfw_val_acc,0.91\n2,1,val_acc,0.91\n")
    (tmp_path / "results.json").write_text(json.dumps(
        {"test": {"lfw": {"accuracy": 0.91, "std": 0.01, "pairs": 300}, "average": {"accuracy": 0.91}},
         "best_epoch": 1}))
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "ir_18" in page and "0.9100" in page
    curves = (tmp_path / "curves.png").read_bytes()
    assert base64.b64encode(curves).decode() in page
    # the loss curve is drawn from the CSV: without its rows the figure changes
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    (tmp_path / "no_loss.csv").write_text("\n".join(r for r in rows if ",train_loss," not in r) + "\n")
    assert plot_curves(tmp_path / "no_loss.csv", tmp_path / "no_loss.png").read_bytes() != curves


def test_report_cli_rejects_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 1
    assert "not a training run folder" in capsys.readouterr().err


@pytest.mark.parametrize("name, content, fragment", [
    ("results.json", "[1, 2]", "results.json: holds a JSON array, not the object"),
    ("results.json", '"done"', "results.json: holds a JSON string"),
    ("results.json", "null", "results.json: holds a JSON null"),
    ("results.json", '{"test": [0.9]}', "results.json: 'test' is not a table of verification sets"),
    ("results.json", '{"test": {"lfw": 0.9}}', "results.json: 'test' is not a table of verification sets"),
    ("config.json", "[]", "config.json: holds a JSON array"),
    ("metrics.csv", "a,b\n1,2\n", "metrics.csv: not the step,epoch,name,value table"),
    ("metrics.csv", "step,epoch,name,value\nx,0,lr,0.1\n", "metrics.csv: not the step,epoch,name,value table"),
])
def test_report_of_odd_run_files_is_one_line_naming_the_file(tmp_path, capsys, name, content, fragment):
    (tmp_path / "config.json").write_text(json.dumps({"arch": "ir_18"}))
    (tmp_path / name).write_text(content)
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "curves.png").exists()
