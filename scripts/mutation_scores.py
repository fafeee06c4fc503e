"""Per-module mutation scores from the last `mutmut run` (run from the repository root).

score = killed / checked, checked = mutants run so far (not "skipped", not "not checked");
timeouts and crashes count as killed, survivors and mutants no test reached ("no tests") do
not. Exit 1 when a module is below --floor (percent) or has unchecked mutants.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict

KILLED = {"killed", "timeout", "segfault", "caught by type check"}
MUTANT_LINE = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+)$")


def module_of(mutant: str) -> str:
    """'facetrain.heads.adaface.xǁAdaFaceǁmargin_scaler__mutmut_3' -> 'facetrain.heads.adaface'."""
    return re.split(r"\.x[_ǁ]", mutant, maxsplit=1)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--floor", type=float, default=85.0, help="minimum score per module, percent")
    parser.add_argument("--survivors", action="store_true", help="also list the surviving mutants")
    args = parser.parse_args()
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                         check=True, capture_output=True, text=True).stdout
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in out.splitlines():
        match = MUTANT_LINE.match(line)
        if not match:
            continue
        module, status = module_of(match["name"]), match["status"].strip()
        counts[module][status] += 1
        if status not in KILLED | {"skipped", "not checked"}:
            survivors[module].append(f"{match['name']} ({status})")
    below = []
    print(f"{'module':40s} {'killed':>7s} {'checked':>7s} {'score':>7s} {'unchecked':>9s}")
    for module in sorted(counts):
        c = counts[module]
        checked = sum(c.values()) - c["skipped"] - c["not checked"]
        killed = sum(c[s] for s in KILLED)
        score = 100.0 * killed / checked if checked else 0.0
        print(f"{module:40s} {killed:7d} {checked:7d} {score:6.1f}% {c['not checked']:9d}")
        if score < args.floor or c["not checked"]:
            below.append(module)
        if args.survivors:
            for name in sorted(survivors[module]):
                print(f"    {name}")
    if below:
        print(f"below {args.floor:.0f}% or not fully checked: {', '.join(below)}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
