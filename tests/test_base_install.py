"""`make demo` installs the base dependencies only: the demo must run with every optional package hidden."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Everything pyproject.toml lists outside `dependencies` (its extras and [dev]), by import name; `pytest`
# too: the demo must not need the test runner.
OPTIONAL = ("wandb", "sklearn", "skimage", "scipy", "onnx", "onnxruntime", "huggingface_hub", "hypothesis",
            "mutmut", "build", "tensorboard", "yaml", "pytest")

RUN_WITHOUT_EXTRAS = textwrap.dedent("""
    import sys
    HIDDEN = sys.argv[1].split(",")
    for name in HIDDEN:  # None in sys.modules: `import name` fails, importlib.util.find_spec(name) is None
        sys.modules[name] = None
    from facetrain.cli import main
    code = main(sys.argv[2:])
    sys.exit(code)
""")


@pytest.mark.slow
def test_tiny_demo_runs_on_the_base_dependencies(tmp_path):
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-c", RUN_WITHOUT_EXTRAS, ",".join(OPTIONAL), "demo", "--tiny", "--out",
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "report.html").is_file() and (tmp_path / "results.json").is_file()
