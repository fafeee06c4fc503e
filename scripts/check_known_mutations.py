"""Known science errors (docs/testing.md), each applied to a copy of src/ and run against the
tests that must catch it. Every one must make at least one of its tests fail.

    python scripts/check_known_mutations.py [NAME ...]     (from the repository root)

Exit 1 when a mutation survives (its tests pass) or no longer applies (the code moved: update the
edit here). Complements `make mutants`, whose generic operators cannot express most of these.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # under src/facetrain/
    edits: tuple[tuple[str, str], ...]  # (old, new): every occurrence of old is replaced; none = not applied
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation("adaface: zhat from the statistics before the EMA update", "heads/adaface.py", (
        ("        safe_norms = norms.detach().float().clamp(0.001, 100)\n",
         "        safe_norms = norms.detach().float().clamp(0.001, 100)\n"
         "        early = (safe_norms - self.batch_mean) / (self.batch_std + self.eps) * self.h\n"),
        ("        return zhat.clamp(-1, 1)", "        return early.clamp(-1, 1)")),
        ("tests/test_adaface_reference.py",)),
    Mutation("adaface: clip before multiplying by h", "heads/adaface.py", (
        ("(self.batch_std + self.eps) * self.h\n", "(self.batch_std + self.eps)\n"),
        ("return zhat.clamp(-1, 1)", "return zhat.clamp(-1, 1) * self.h")),
        ("tests/test_adaface_reference.py",)),
    Mutation("adaface: no batch-of-1 guard", "heads/adaface.py",
             (("if self.training and safe_norms.numel() > 1:", "if self.training:"),),
             ("tests/test_adaface_reference.py",)),
    Mutation("10-fold: std with ddof=1", "eval/verification.py",
             (('float(acc["fold_accuracies"].std())', 'float(acc["fold_accuracies"].std(ddof=1))'),),
             ("tests/test_verification_reference.py",)),
    Mutation("10-fold: median instead of mean threshold", "eval/verification.py",
             (('float(acc["fold_thresholds"].mean())', 'float(np.median(acc["fold_thresholds"]))'),),
             ("tests/test_verification_reference.py",)),
    Mutation("10-fold: TAR grid step 0.01", "eval/verification.py",
             (("VAL_THRESHOLDS = np.arange(0, 4, 0.001)", "VAL_THRESHOLDS = np.arange(0, 4, 0.01)"),),
             ("tests/test_verification_reference.py",)),
    Mutation("training: best.ckpt is always the first epoch", "train/loop.py",
             (('improved = logs["val_acc"] > run.best.metric', "improved = run.best.epoch < 0"),),
             ("tests/test_train_best_and_resume.py",)),
    Mutation("training: metrics.csv not truncated on resume", "train/loop.py",
             (("run.logger.truncate_after(run.position.global_step)", "pass"),),
             ("tests/test_train_best_and_resume.py",)),
    Mutation("export: BN running statistics lost on the way", "checkpoint.py",
             (("model.load_state_dict(backbone_state, strict=True)",
               'model.load_state_dict({k: v for k, v in backbone_state.items() if "running" not in k}, strict=False)'),),
             ("tests/test_export_trained_bn.py",)),
    Mutation("demo: no accuracy floor", "commands/demo.py",
             (("    check_accuracy_floor(results, settings.min_average_accuracy)", "    pass"),),
             ("tests/test_demo.py",)),
    Mutation("ddp: the same dropout masks in every process", "train/build.py",
             (("torch.manual_seed(config.seed + ctx.rank)", "torch.manual_seed(config.seed)"),),
             ("tests/test_train_ddp_trained.py",)),
    Mutation("ddp: AdaFace statistics not averaged over processes", "train/loop.py",
             (("        D.sync_float_buffers(run.head, run.ctx)\n", ""),),
             ("tests/test_train_ddp_trained.py",)),
    Mutation("ijb: loose crops resized instead of aligned", "eval/ijb_features.py",
             (("return align_face(image, self.landmarks[i])", "return cv2.resize(image, (112, 112))"),),
             ("tests/test_ijb_warp.py",)),
    Mutation("ijb: alignment template 8 px left", "geometry/similarity.py",
             (("TEMPLATE_112 * (size / 112.0)", "(TEMPLATE_112 - [8.0, 0.0]) * (size / 112.0)"),),
             ("tests/test_ijb_warp.py",)),
)


def apply(mutation: Mutation, src: Path) -> bool:
    path = src / "facetrain" / mutation.path
    text = path.read_text()
    for old, new in mutation.edits:
        if old not in text:
            return False
        text = text.replace(old, new)
    path.write_text(text)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="substrings of the mutation names to run (default: all)")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.names or any(n in m.name for n in args.names)]
    failures = 0
    for mutation in chosen:
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            if not apply(mutation, src):
                print(f"NOT APPLIED  {mutation.name}")
                failures += 1
                continue
            env = {**os.environ, "PYTHONPATH": str(src)}
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                  *mutation.tests], cwd=ROOT, env=env, capture_output=True, text=True)
            caught = run.returncode != 0
            print(f"{'caught      ' if caught else 'SURVIVED    '}{mutation.name}")
            failures += not caught
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
