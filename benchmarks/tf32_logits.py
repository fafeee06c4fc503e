"""What TF32 would do to the margin head's logits, emulated on the CPU.

TF32 tensor-core products round both float32 operands to a 10-bit mantissa and accumulate in
float32. Here the rounding is applied bit-exactly (round to nearest even) to the normalised
embeddings and class centres before a float32 matrix product, and the logits s*cos are compared
with the float32 ones; bf16 (7-bit mantissa, what `--precision auto` trains the backbone in) is
shown for scale, and so is the cross-entropy loss. Embeddings are drawn close to their class centre
(cos ~ 0.5-0.8, as late in training) or uniformly (as at the start).

    python benchmarks/tf32_logits.py --classes 10000 --batch 256
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F


def round_mantissa(x: torch.Tensor, bits: int) -> torch.Tensor:
    """float32 -> float32 holding the nearest value with a `bits`-bit mantissa (ties to even)."""
    drop = 23 - bits
    if drop == 0:
        return x
    i = x.contiguous().view(torch.int32)
    lsb = (i >> drop) & 1
    rounded = (i + ((1 << (drop - 1)) - 1) + lsb) & ~((1 << drop) - 1)
    return rounded.view(torch.float32)


def compare(classes: int, batch: int, dim: int, s: float, spread: float, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(dim, classes, generator=g, dtype=torch.float64), dim=0)
    labels = torch.randint(0, classes, (batch,), generator=g)
    emb = centres[:, labels].T + spread * torch.randn(batch, dim, generator=g, dtype=torch.float64) / dim ** 0.5
    emb = F.normalize(emb, dim=1)
    exact = s * (emb @ centres)  # float64 reference
    e32, c32 = emb.float(), centres.float()
    out = {"classes": classes, "batch": batch, "spread": spread,
           "target_cos_mean": float((exact[torch.arange(batch), labels] / s).mean())}
    for name, bits in (("fp32", 23), ("tf32", 10), ("bf16", 7)):
        logits = s * (round_mantissa(e32, bits) @ round_mantissa(c32, bits)).double()
        err = (logits - exact).abs()
        loss_err = abs(float(F.cross_entropy(logits, labels) - F.cross_entropy(exact, labels)))
        out[name] = {"max_abs_logit_error": float(err.max()), "mean_abs_logit_error": float(err.mean()),
                     "loss_abs_error": loss_err}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--s", type=float, default=64.0)
    args = parser.parse_args(argv)
    for spread in (0.8, 1e3):  # near the class centre / uniformly random
        print(json.dumps(compare(args.classes, args.batch, args.dim, args.s, spread, seed=0)))


if __name__ == "__main__":
    main()
