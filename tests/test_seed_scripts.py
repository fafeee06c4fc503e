"""The seed's scripts, each run as a user would (bash / python subprocess) on tiny synthetic data."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facetrain.synthetic.generate import generate_dataset

REPO = Path(__file__).resolve().parents[1]
# Tiny, fast settings appended after each recipe's flags (argparse: the last value wins).
FAST_TRAIN = ["--arch", "tinynet", "--epochs", "1", "--batch_size", "16", "--num_workers", "0", "--gpus", "0",
              "--low_res_augmentation_prob", "0", "--crop_augmentation_prob", "0",
              "--photometric_augmentation_prob", "0"]


def _env(**extra):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               OMP_NUM_THREADS="1", **extra)
    return env


def _run(cmd, cwd, **env):
    proc = subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, num_identities=8, images_per_identity=4, seed=3, bins=True, rec=True, ijb=True,
                     pairs_per_set=20, ijb_subjects=4, progress=False)
    return root


def test_prep_data_validation_makes_memfiles(synth, tmp_path):
    val = tmp_path / "validation"
    val.mkdir()
    for b in synth.glob("*.bin"):
        shutil.copy(b, val)
    _run(["bash", str(REPO / "scripts/prep_data_validation.sh"), str(val)], tmp_path)
    for name in ("lfw", "cfp_fp", "cplfw", "calfw", "agedb_30", "cfp_ff"):
        assert (val / f"{name}.dat.conf").is_file() and (val / f"{name}_list.npy").is_file()


def test_compound_script_merges_with_absolute_links(synth, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(synth / "imgs", tmp_path / "a")
    shutil.copytree(synth / "imgs", tmp_path / "b")
    # relative dataset paths: the seed's links broke because they were relative
    _run([sys.executable, str(REPO / "scripts/compound_multiple_datasets.py"), "--list_datasets", "a", "b",
          "--final_path", "merged/imgs"], tmp_path)
    merged = tmp_path / "merged" / "imgs"
    identities = sorted(p.name for p in merged.iterdir())
    assert identities == sorted(p.name for p in (synth / "imgs").iterdir())
    files = list((merged / identities[0]).iterdir())
    assert sorted(f.name[:3] for f in files) == ["d1_"] * 4 + ["d2_"] * 4
    assert all(f.is_symlink() and Path(os.readlink(f)).is_absolute() and f.resolve().is_file() for f in files)


def test_prep_data_train_folder_from_a_dcface_release(synth, tmp_path):
    record = tmp_path / "dcface" / "record"
    record.mkdir(parents=True)
    for name in ("train.rec", "train.idx"):
        shutil.copy(synth / name, record)
    names = [f"{p.parent.name}/{p.name}" for p in sorted((synth / "imgs").glob("*/*.jpg"),
                                                          key=lambda p: (p.parent.name, int(p.stem)))]
    (record / "list.txt").write_text("\n".join(names) + "\n")
    _run(["bash", str(REPO / "scripts/prep_data_train_folder.sh"), str(tmp_path / "dcface")], tmp_path)
    written = sorted(f"{p.parent.name}/{p.name}" for p in (tmp_path / "dcface" / "imgs").glob("*/*.jpg"))
    assert written == sorted(names)


# The fork's recipe as typed in its scripts/train.sh: what must reach main.py, in this order.
RECIPE_FLAGS = ["--data_root", "./all_data", "--train_data_path", "./all_data/train_{task}/", "--val_data_path", "./validation/",
                "--prefix", "ir50_{task}_adaface", "--output_dir", "./experiments", "--custom_num_class", "{n_ids}",
                "--gpus", "1", "--use_16bit", "--arch", "ir_50", "--batch_size", "256", "--num_workers", "8",
                "--epochs", "30", "--lr_milestones", "12,20,26", "--lr", "0.1", "--head", "adaface", "--m", "0.4",
                "--h", "0.333", "--low_res_augmentation_prob", "0.2", "--crop_augmentation_prob", "0.2",
                "--photometric_augmentation_prob", "0.2"]


RECIPE_VARIABLES = ("task_num", "n_ids", "train_data_d1", "train_data_d2")


def _recorded_python_calls(tmp_path, script, *args, **env):
    """Run a seed script with a stand-in `python` first on PATH that records its argv instead of running."""
    stand_in = tmp_path / "bin" / "python"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/usr/bin/env bash\n{ printf \'%s\\n\' "$@"; echo "<end>"; } >> "$ARGV_LOG"\n')
    stand_in.chmod(0o755)
    log = tmp_path / "argv.log"
    work = tmp_path / "work"
    work.mkdir()
    inherited = {k: v for k, v in os.environ.items() if k not in RECIPE_VARIABLES}  # the defaults, unless given
    full_env = dict(inherited, PATH=f"{stand_in.parent}{os.pathsep}{_env()['PATH']}", ARGV_LOG=str(log), **env)
    proc = subprocess.run(["bash", str(REPO / script), *args], cwd=work, env=full_env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = [call.strip("\n").split("\n") for call in log.read_text().split("<end>\n") if call.strip()]
    for call in calls:  # the scripts call python files by their own location
        call[0] = os.path.relpath(os.path.realpath(call[0]), REPO)
    return work, calls


def _expected_calls(task, n_ids, d1, d2, extra=()):
    return [["scripts/compound_multiple_datasets.py", "--final_path", f"./all_data/train_{task}/imgs",
             "--list_datasets", d1, d2],
            ["main.py", *[f.format(task=task, n_ids=n_ids) for f in RECIPE_FLAGS], *extra]]


def test_train_sh_passes_the_fork_recipe_with_its_defaults(tmp_path):
    work, calls = _recorded_python_calls(tmp_path, "scripts/train.sh")
    assert calls == _expected_calls("1", "30000", "./sg2_n30k_ir50_r14_k10_w01_e001_it100_lang/images_arcface_112x112",
                                    "./sg2_n30k_ir50_r14_disco_n64_rl14/images_arcface_112x112")
    assert (work / "all_data" / "train_1").is_dir()


def test_train_sh_variables_come_from_the_environment(tmp_path):
    work, calls = _recorded_python_calls(tmp_path, "scripts/train.sh", "--epochs", "2", task_num="7", n_ids="123",
                                         train_data_d1="refs/imgs", train_data_d2="/data/variants")
    assert calls == _expected_calls("7", "123", "refs/imgs", "/data/variants", extra=["--epochs", "2"])


def test_prep_and_train_prepares_validation_then_runs_the_recipe(tmp_path, synth):
    work, calls = _recorded_python_calls(tmp_path, "scripts/prep_and_train.sh", "--arch", "ir_18", BIN_DIR=str(synth),
                                         task_num="2", n_ids="8", train_data_d1="a", train_data_d2="b")
    assert calls == _expected_calls("2", "8", "a", "b", extra=["--arch", "ir_18"])
    assert (work / "all_data" / "validation" / "lfw.bin").resolve() == (synth / "lfw.bin").resolve()


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory):
    """scripts/prep_and_train.sh end to end (validation prep, scripts/train.sh: compound, main.py), for real."""
    work = tmp_path_factory.mktemp("work")
    shutil.copytree(synth / "imgs", work / "refs")
    shutil.copytree(synth / "imgs", work / "variants")
    out = _run(["bash", str(REPO / "scripts/prep_and_train.sh"), *FAST_TRAIN], work, BIN_DIR=str(synth),
               task_num="5", n_ids="8", train_data_d1="./refs", train_data_d2="./variants")
    return work, work / "experiments", out


def test_prep_and_train_runs_the_whole_recipe(trained):
    work, run_dir, out = trained
    config = json.loads((run_dir / "config.json").read_text())
    # the recipe's values that FAST_TRAIN does not override reach the run
    assert config["head"] == "adaface" and config["m"] == 0.4 and config["h"] == 0.333 and config["lr"] == 0.1
    assert config["lr_milestones"] == [12, 20, 26] and config["arch"] == "tinynet" and config["use_16bit"] is True
    assert config["custom_num_class"] == 8 and config["prefix"] == "ir50_5_adaface"
    assert config["train_data_path"] == "./all_data/train_5/" and config["data_root"] == "./all_data"
    merged = work / "all_data" / "train_5" / "imgs"
    assert len(list(merged.iterdir())) == 8 and len(list(merged.glob("*/d1_*"))) == len(list(merged.glob("*/d2_*"))) == 32
    assert (run_dir / "last.ckpt").is_file() and (run_dir / "results.json").is_file()
    assert (work / "all_data" / "validation" / "lfw.dat.conf").is_file()
    assert "final test" in out


def test_eval_5valsets_script(trained, tmp_path, synth):
    _, run_dir, _ = trained
    out = _run(["bash", str(REPO / "scripts/eval_5valsets.sh"), "--sets", "lfw", "agedb_30"], tmp_path,
               CKPT=str(run_dir / "last.ckpt"), VAL_DATA=str(synth), OUT=str(tmp_path / "ev"))
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert set(results) == {"meta", "results"}  # write_json's layout
    assert set(results["results"]) == {"lfw", "agedb_30", "average"}
    assert results["results"]["average"]["sets"] == ["lfw", "agedb_30"]
    assert "lfw" in out


def test_eval_ijb_script(trained, tmp_path, synth):
    _, run_dir, _ = trained
    _run(["bash", str(REPO / "scripts/eval_ijb.sh")], tmp_path, CKPT=str(run_dir / "last.ckpt"),
         DATA_ROOT=str(synth / "ijb"), DATASET="IJBC", OUT=str(tmp_path / "ijb"))
    assert (tmp_path / "ijb" / "verification_result.csv").is_file() and (tmp_path / "ijb" / "roc.png").is_file()


def test_main_py_evaluate_mode(trained, synth, tmp_path):
    _, run_dir, _ = trained
    out = _run([sys.executable, str(REPO / "main.py"), "--evaluate", "--start_from_model_statedict",
                str(run_dir / "last.ckpt"), "--data_root", str(synth.parent), "--val_data_path", synth.name,
                "--output_dir", str(tmp_path / "e"), "--gpus", "0", "--arch", "tinynet"], tmp_path)
    assert "lfw" in out and (tmp_path / "e" / "evaluation.json").is_file()


def test_inference_py_prints_the_similarity_matrix(trained):
    _, run_dir, _ = trained
    out = _run([sys.executable, str(REPO / "inference.py"), "--ckpt", str(run_dir / "last.ckpt")], REPO)
    # the seed prints torch's repr: tensor([[1.0000, 0.7334, -0.0655], ...])
    matrix = out[out.rindex("tensor(") :]
    values = np.array([float(v) for v in re.findall(r"-?\d+\.\d+", matrix)[:9]]).reshape(3, 3)
    np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-3)
    np.testing.assert_allclose(values, values.T, atol=1e-4)
