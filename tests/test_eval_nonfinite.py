"""A checkpoint full of NaN must not evaluate to "50%": non-finite embeddings are an error."""
import numpy as np
import torch

from facetrain.checkpoint import save_checkpoint
from facetrain.cli import main
from facetrain.data.formats.bin import write_bin
from facetrain.models import build_model


def test_nan_checkpoint_is_an_error_not_fifty_percent(tmp_path, capsys):
    model = build_model("tinynet").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.ckpt", model)
    rng = np.random.default_rng(0)
    write_bin(tmp_path / "lfw.bin", rng.integers(0, 256, (20, 112, 112, 3), dtype=np.uint8), [True, False] * 5)
    out_json = tmp_path / "r.json"
    rc = main(["eval", "--ckpt", str(tmp_path / "nan.ckpt"), "--val_data_path", str(tmp_path), "--device", "cpu",
               "--json", str(out_json), "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith(f"error: {tmp_path / 'nan.ckpt'}: the model gives non-finite (NaN/inf) embeddings for 20 of 20 images (lfw)")
    assert len(err.strip().splitlines()) == 1 and not out_json.exists()
