"""Build the cpu-small ViPET-VLM, write a (random-weight) report for a phantom study,
and print the attention map's shape, parameter counts per part and step timings.

Run:  .venv/bin/python scripts/model_smoke.py [--preset cpu-small] [--lang vi]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vipet.data.prompts import build_example, build_inference, report_prompt, target_text
from vipet.data.tokenizer import stop_token_ids, synthetic_corpus, train_tokenizer
from vipet.model.presets import build_model, model_grid
from vipet.phantom.simulate import simulate_case
from vipet.preprocess import PreprocessConfig, preprocess_study
from vipet.reports.render import render_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--lang", default="vi", choices=["vi", "en"])
    parser.add_argument("--new-tokens", type=int, default=40)
    args = parser.parse_args()
    torch.manual_seed(0)

    case = simulate_case(0, 0)  # phantom study 0 of seed 0, in memory
    grid = model_grid(args.preset)
    samples = preprocess_study(case.study, PreprocessConfig(grid=grid))
    ct = torch.from_numpy(np.stack([s.ct for s in samples]))[None]  # (1, R, D, H, W)
    pet = torch.from_numpy(np.stack([s.pet for s in samples]))[None]
    print(
        f"study {case.study.id}: {len(case.lesions)} lesions; regions {[s.region for s in samples]}, grid {grid}"
    )

    tok = train_tokenizer(synthetic_corpus(200, 0), vocab_size=4000)
    model = build_model(args.preset, tok).eval()
    n_visual = model.visual_tokens_per_region
    print(
        f"{args.preset}: {n_visual} visual tokens per region; parameters (total, trainable) per part:"
    )
    for part, (total, trainable) in model.parameter_counts().items():
        print(f"  {part:22s} {total:>10,d} {trainable:>10,d}")
    print(f"  {'all':22s} {sum(p.numel() for p in model.parameters()):>10,d}")

    prompt = build_inference(tok, report_prompt(args.lang, None, n_visual))
    ids = torch.tensor([prompt["input_ids"]])
    t0 = time.perf_counter()
    visual = model.encode_images(ct, pet, with_attention=True)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = model.generate(
        ids, visual=visual, max_new_tokens=args.new_tokens, eos_token_id=stop_token_ids(tok)
    )
    t_gen = time.perf_counter() - t0
    print(
        f"encode 3 regions {t_enc:.2f} s; generate {new.shape[1]} tokens {t_gen:.2f} s (KV cache)"
    )
    print("report (random weights):", repr(tok.decode(new[0], skip_special_tokens=True)[:200]))

    full = torch.cat([ids, new], dim=1)
    out = model(full, visual=visual, output_attentions=True)
    query = torch.zeros_like(full, dtype=torch.bool)
    query[:, ids.shape[1] :] = True
    maps = model.attention_maps(out, full, query)
    print(
        f"attention maps: {tuple(maps.shape)} (B, R, D, H, W), range [{maps.min():.2f}, {maps.max():.2f}]"
    )

    model.train()
    report = render_report(case.lesions, args.lang, np.random.default_rng(0), case.physiology)
    example = build_example(
        tok,
        report_prompt(args.lang, None, n_visual),
        target_text(report, None, args.lang),
        max_length=1024,
    )
    batch = {k: torch.tensor([v]) for k, v in example.items()}
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        step = model(
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
            ct=ct,
            pet=pet,
        )
        (step.loss + step.diag_logits.sum() * 0).backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    print(
        f"forward+backward, 1 whole-study sample ({batch['input_ids'].shape[1]} tokens): "
        f"{np.median(times):.2f} s (median of 3; {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
