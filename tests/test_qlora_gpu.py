"""QLoRA's saved folder computes what the trained 4-bit model computed, and loads as plain bf16.

Needs a CUDA GPU and bitsandbytes (skipped in CI, which has neither); run on the GPU machine with
``python -m pytest tests/test_qlora_gpu.py``."""
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")
pytest.importorskip("peft")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU")

from rankvideo.demo.tiny_model import build_tiny_vlm  # noqa: E402
from rankvideo.training.common import TrainSettings, finalize, prepare_model  # noqa: E402


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_qlora_result_is_the_trained_function_in_bf16(tmp_path):
    from transformers import AutoModelForImageTextToText

    base = build_tiny_vlm(tmp_path / "base", seed=3)
    settings = TrainSettings(finetune="qlora", bf16=True, gradient_checkpointing=False)
    model, processor = prepare_model(str(base), settings)
    model.eval()
    # stand-in for training: non-zero LoRA factors (B starts at zero) and a changed projector
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn(param.shape, generator=generator).to(param.device, param.dtype))
    ids = torch.randint(10, 200, (2, 24), generator=generator).cuda()
    trained = _logits(model, ids)
    merger = {k: v.detach().float().cpu().clone() for k, v in model.named_parameters()
              if ".merger." in k and "modules_to_save" in k}
    assert merger, "the projector is trained (modules_to_save)"

    out = tmp_path / "stage1"
    finalize(model, processor, out, "stage1", str(base), settings, {}, [])
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    loaded = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.bfloat16).cuda().eval()
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    saved = _logits(loaded, ids)

    untrained = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.bfloat16).cuda().eval()
    before = _logits(untrained, ids)
    update = (trained - before).abs().max().item()
    error = (saved - trained).abs().max().item()
    assert update > 0.05, update  # the stand-in training changed the function
    assert error < 0.05 * update, (error, update)  # and the saved folder keeps that change
    saved_merger = {k.split(".merger.", 1)[1]: v.float().cpu() for k, v in loaded.named_parameters() if ".merger." in k
                    and "deepstack" not in k}
    for name, value in merger.items():
        key = name.split(".merger.", 1)[1].replace("modules_to_save.default.", "")
        assert torch.allclose(saved_merger[key], value, atol=1e-2), key
