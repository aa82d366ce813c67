"""Generation and training-step benchmark of ViPET-VLM, on the CPU or a GPU.

What a clinician waits for, and what a training run costs, per model size:

- **encode**: the three regions of one study through the encoders, fusion and projector;
- **time to first token** (encode + prompt prefill + one token);
- **decode tokens/s** with the KV cache and without it (each new token re-reads the
  whole prefix);
- **whole-study report**: encode + a 3-region report of ``--report-tokens`` tokens;
- **follow-up question**: a question on features already encoded (the study is not
  encoded again) with a ``--answer-tokens`` answer;
- **training step** (``--train``): forward + backward + AdamW on a batch of whole-study
  items with every loss part that needs no data (LM, findings), in the given precision;
- peak memory of each (CUDA allocator peak on a GPU, process peak RSS on the CPU).

Models: ``--preset cpu-small`` (or ``tiny``) with its own randomly initialised LM, or
``--preset gpu-base --lm qwen2.5-1.5b`` — the gpu-base vision side around a randomly
initialised language model of Qwen2.5-1.5B's exact shape (28 layers, width 1536,
151,936-token vocabulary) with the LoRA settings of configs/gpu-qwen2.5-1.5b.yaml; random
weights cost exactly what the pretrained ones do, and nothing is downloaded. Text length
is fixed (``min_new_tokens``), so the timings do not depend on what the weights say.

Run:  .venv/bin/python benchmarks/generation.py [--preset cpu-small] [--json out.json]
      python3 benchmarks/generation.py --device cuda --preset gpu-base --lm qwen2.5-1.5b \\
          --dtype bf16 --train
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from vipet.data.tokenizer import synthetic_corpus, train_tokenizer
from vipet.model.config import ViPetConfig
from vipet.model.language import LoraSettings, apply_lora
from vipet.model.presets import PRESETS, build_model
from vipet.model.vipet import ViPetModel

QWEN_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "vocab_size": 151936,
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
    },
}
LORA = LoraSettings(
    r=16,
    alpha=32,
    dropout=0.05,
    target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
)


def build(preset: str, lm: str | None, device: torch.device, dtype: torch.dtype) -> ViPetModel:
    if lm is None:
        tok = train_tokenizer(synthetic_corpus(20, 0), vocab_size=4000)
        model = build_model(preset, tok)
    else:
        from transformers import AutoConfig, AutoModelForCausalLM

        text = AutoConfig.for_model(**QWEN_SHAPES[lm])
        language = AutoModelForCausalLM.from_config(text)
        vision = {k: dict(v) for k, v in PRESETS[preset].items() if k != "text"}
        cfg = ViPetConfig(text_config=text, image_token_id=151646, **vision)
        model = ViPetModel(cfg, language_model=language)
        model.language_model = apply_lora(model.language_model, LORA)
    return model.to(device=device, dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeats: int) -> tuple[float, Any]:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up, and its result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmHWM"].split()[0]) / 1024


def prompt(model: ViPetModel, regions: int, text: int, batch: int, device) -> torch.Tensor:
    n = regions * model.visual_tokens_per_region
    g = torch.Generator().manual_seed(0)
    vocab = model.get_input_embeddings().weight.shape[0]
    ids = torch.randint(10, min(vocab, 3000), (batch, n + text), generator=g)
    ids[:, 1 : 1 + n] = model.config.image_token_id
    return ids.to(device)


def images(model: ViPetModel, batch: int, regions: int, device, dtype) -> tuple:
    shape = (batch, regions, *model.config.ct_encoder["image_size"])
    g = torch.Generator().manual_seed(1)
    return (
        torch.rand(shape, generator=g).to(device, dtype),
        torch.rand(shape, generator=g).to(device, dtype),
    )


def generation(model: ViPetModel, args, device, dtype) -> dict[str, float]:
    model.eval()
    ct, pet = images(model, 1, 3, device, dtype)
    ids = prompt(model, 3, 40, 1, device)
    question = prompt(model, 3, 25, 1, device)
    res: dict[str, float] = {}
    fixed = {"do_sample": False, "eos_token_id": None, "pad_token_id": 0}

    def gen(n: int, visual, use_cache: bool = True, tokens=ids):
        return model.generate(
            tokens,
            visual=visual,
            max_new_tokens=n,
            min_new_tokens=n,
            use_cache=use_cache,
            **fixed,
        )

    with torch.inference_mode():
        reset_peak(device)
        res["encode_s"], visual = timed(lambda: model.encode_images(ct, pet), device, args.repeats)
        res["ttft_s"], _ = timed(lambda: gen(1, model.encode_images(ct, pet)), device, args.repeats)
        n = args.decode_tokens
        t_cached, _ = timed(lambda: gen(n + 1, visual), device, args.repeats)
        t_first, _ = timed(lambda: gen(1, visual), device, args.repeats)
        res["decode_tok_s_kv_cache"] = n / max(t_cached - t_first, 1e-9)
        t_plain, _ = timed(lambda: gen(n + 1, visual, use_cache=False), device, 1)
        t_first_plain, _ = timed(lambda: gen(1, visual, use_cache=False), device, 1)
        res["decode_tok_s_no_cache"] = n / max(t_plain - t_first_plain, 1e-9)
        res["report_s"], _ = timed(
            lambda: gen(args.report_tokens, model.encode_images(ct, pet)), device, args.repeats
        )
        res["followup_s"], _ = timed(
            lambda: gen(args.answer_tokens, visual, tokens=question), device, args.repeats
        )
        res["inference_peak_mb"] = peak_mb(device)
    return res


def training_step(model: ViPetModel, args, device, dtype) -> dict[str, float]:
    from vipet.model.diag_head import diag_loss

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    b = args.batch
    ct, pet = images(model, b, 3, device, torch.float32)
    ids = prompt(model, 3, args.train_text, b, device)
    labels = ids.clone()
    labels[ids == model.config.image_token_id] = -100
    autocast = (
        torch.autocast(device.type, dtype=dtype)
        if device.type == "cuda" and dtype != torch.float32
        else torch.autocast(device.type, enabled=False)
    )

    def step() -> float:
        with autocast:
            out = model(input_ids=ids, labels=labels, ct=ct, pet=pet)
            diag = out.diag_logits.float()
            loss = out.loss + diag_loss(diag, torch.zeros_like(diag))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    reset_peak(device)
    seconds, loss = timed(step, device, args.repeats)
    return {
        "train_step_s": seconds,
        "train_samples_s": b / seconds,
        "train_tokens": int(ids.numel()),
        "train_loss_finite": bool(torch.isfinite(torch.tensor(loss))),
        "train_peak_mb": peak_mb(device),
        "trainable_params": sum(p.numel() for p in params),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="cpu-small", choices=sorted(PRESETS))
    ap.add_argument("--lm", default=None, choices=sorted(QWEN_SHAPES))
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--report-tokens", type=int, default=300)
    ap.add_argument("--answer-tokens", type=int, default=8)
    ap.add_argument("--train", action="store_true", help="also time a training step")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--train-text", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if "text" not in PRESETS[args.preset] and args.lm is None:
        ap.error(f"preset {args.preset} has no language model of its own: give --lm")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    # the weights stay fp32 for training (autocast), and are cast for inference
    model = build(args.preset, args.lm, device, torch.float32)
    res: dict[str, Any] = {
        "preset": args.preset,
        "lm": args.lm or "own",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "params": sum(p.numel() for p in model.parameters()),
    }
    if args.train:
        res.update(training_step(model, args, device, dtype))
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    res.update(generation(model.to(dtype), args, device, dtype))
    width = max(map(len, res))
    for k, v in res.items():
        print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
