"""facetrain works as an installed wheel outside the repository: build the wheel, install it into a
fresh virtual environment in a temporary folder (its dependencies borrowed from the test's own
environment, so nothing is fetched), and align, embed and compare the astronaut photo there."""
import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from facetrain.checkpoint import save_checkpoint
from facetrain.models import build_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"),
          str(REPO)], root, env)
    wheel = next((root / "dist").glob("facetrain-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"facetrain/alignment/weights/{n}.pt" for n in ("pnet", "rnet", "onet")} <= set(names)
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    venv.EnvBuilder(with_pip=False).create(root / "venv")
    target = next((root / "venv" / "lib").glob("python*/site-packages"))
    # the dependencies (torch, cv2, ...) come from this environment: a path entry, whose own .pth files
    # (among them this checkout's editable install) are not processed
    (target / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
         root, env)
    return root, env


def test_installed_wheel_aligns_embeds_and_compares_outside_the_repository(installed):
    root, env = installed
    python = root / "venv" / "bin" / "python"
    work = root / "work"
    (work / "photos" / "astronaut").mkdir(parents=True)
    cv2.imwrite(str(work / "photos" / "astronaut" / "a.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    save_checkpoint(work / "tiny.ckpt", build_model("tinynet").eval())
    env = {**env, "HOME": str(root / "home")}
    where = _run([str(python), "-c", "import facetrain, sys; print(facetrain.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(root / "venv") and not Path(where).is_relative_to(REPO)
    _run([str(python), "-m", "facetrain", "align", "photos", "aligned", "--no_progress"], work, env)
    report = json.loads((work / "aligned" / "align_report.json").read_text())
    face = cv2.imread(str(work / "aligned" / "imgs" / "astronaut" / "a.jpg"))
    assert face.shape == (112, 112, 3), report
    _run([str(python), "-m", "facetrain", "embed", "aligned", "--ckpt", "tiny.ckpt", "--out", "emb.npz",
          "--no_progress"], work, env)
    embeddings = np.load(work / "emb.npz")["embeddings"]
    assert embeddings.shape == (1, 512) and abs(np.linalg.norm(embeddings[0]) - 1) < 1e-5
    out = _run([str(python), "-m", "facetrain", "compare", "photos/astronaut/a.png", "photos/astronaut/a.png",
                "--ckpt", "tiny.ckpt"], work, env)
    assert "1.000" in out
