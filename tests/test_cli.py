import subprocess
import sys

from facetrain.cli import VERBS, main


def test_help_lists_every_verb(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_unknown_verb_is_an_error(capsys):
    assert main(["no-such-verb"]) == 2
    assert "unknown verb" in capsys.readouterr().err


def test_python_dash_m_runs():
    proc = subprocess.run([sys.executable, "-m", "facetrain", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "verbs:" in proc.stdout
