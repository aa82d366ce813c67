"""Training loop of ViPET-VLM, in recipe style: `setup` → `fit` (`train_step`,
`evaluate`) → checkpoints → final `save_vipet`.

**Resumable to the step.** A checkpoint holds everything the next step depends on:
weights, optimizer and schedule, the step, the sampler epoch and how many micro-batches
of that epoch this process already consumed, and the python/numpy/torch RNG states of
every process. A resumed run therefore follows the same loss curve as one that never
stopped. Checkpoints are written to a temporary folder and renamed into place, so
``out_dir/checkpoint`` is always a complete checkpoint or absent.

**Distributed.** Under ``torchrun`` (``WORLD_SIZE`` > 1; gloo on CPU, nccl on CUDA) the
model is replicated with DDP, or sharded with FSDP2 (``strategy="fsdp"``: parameters,
gradients and optimizer state split across processes). Every process draws the same
seeded batch order and takes every ``world_size``-th batch of it, so shards are disjoint
and deterministic. Only rank 0 prints, logs and saves; checkpoints and the final model
hold ordinary full tensors whatever the strategy.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import os
import random
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from vipet.config import from_dict, to_dict
from vipet.data.dataset import RegionCountBatchSampler, ViPetDataset, collate
from vipet.data.prompts import IGNORE_INDEX
from vipet.data.tokenizer import FINDING_TOKEN
from vipet.data.vision import VisionCrops, collate_crops
from vipet.errors import ConfigError, InputError
from vipet.io.atomic import atomic_output, atomic_write_bytes
from vipet.model.checkpoint import save_vipet
from vipet.model.diag_head import (
    diag_loss,
    findings_losses,
    heat_targets,
    lesion_centres,
    region_logits,
)
from vipet.model.vipet import VISION_PARTS, ViPetModel, bf16_runs_fast
from vipet.train.build import build_for_training, trainable_summary
from vipet.train.config import TrainConfig
from vipet.train.curves import plot_curves
from vipet.train.losses import (
    answer_cross_entropy,
    combine,
    contrastive_loss,
    focal_tversky_from_counts,
    voxels_per_token,
)
from vipet.train.memo import VisionMemo, slots_by_task

CHECKPOINT = "checkpoint"
METRICS = "metrics.jsonl"
_STATE_FILE = "state.pt"
_CONFIG_FILE = "config.json"


# ---- processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False
    """True when `init_distributed` created the process group (and must destroy it)."""

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the ``torchrun`` job described by the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = torch.device("cpu")
    if cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return Dist(rank=rank, world=world, device=device, owns_group=owns)


def rank_print(d: Dist, *args: Any) -> None:
    """Print on rank 0 only: the single place training talks to the terminal."""
    if d.main:
        tqdm.write(" ".join(str(a) for a in args))


def _barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


# ---- batches ------------------------------------------------------------------------


class ShardedBatches(Sampler[list[int]]):
    """This rank's batches of one epoch of ``base``, from micro-batch ``start`` on.

    Every rank draws the same ``base`` order (seed, epoch) and keeps batches
    ``rank, rank + world, ...`` of it, cut to a multiple of ``world`` so every rank
    takes as many steps."""

    def __init__(self, base: RegionCountBatchSampler, rank: int = 0, world: int = 1) -> None:
        if len(base) < world:
            raise ValueError(f"{len(base)} batches cannot be shared among {world} processes")
        self.base, self.rank, self.world = base, rank, world
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def _mine(self) -> list[list[int]]:
        batches = list(self.base)
        usable = len(batches) // self.world * self.world
        return batches[self.rank : usable : self.world]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.base) // self.world - self.start)


def _loader(ds: ViPetDataset | VisionCrops, sampler: Sampler[list[int]], seed: int) -> DataLoader:
    # Own generator: making an iterator must not draw from the global torch RNG, or a
    # resumed run would diverge from an uninterrupted one.
    fn = (
        collate_crops
        if isinstance(ds, VisionCrops)
        else partial(collate, pad_id=ds.tokenizer.pad_token_id)
    )
    return DataLoader(
        ds,
        batch_sampler=sampler,
        collate_fn=fn,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


# ---- state --------------------------------------------------------------------------


@dataclass
class State:
    """Everything a run carries between steps (no module-level state anywhere)."""

    cfg: TrainConfig
    dist: Dist
    model: torch.nn.Module
    """What is called: the DDP wrapper under torchrun with strategy "ddp", else the model
    itself (FSDP2 shards it in place: then ``model is raw_model``)."""
    raw_model: ViPetModel
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: ShardedBatches
    loader: DataLoader
    val_loader: DataLoader | None
    scaler: torch.amp.GradScaler
    paths: tuple[Path, Path]
    """The dataset root and the sample cache (the detector fitted for ``question_slots``
    "head" reads the splits from them)."""
    vision_sampler: ShardedBatches | None = None
    vision_loader: DataLoader | None = None
    """Crops of the training volumes for the vision phase (None without one)."""
    vision_val_loader: DataLoader | None = None
    memo: VisionMemo | None = None
    """The frozen vision side's outputs, once the language phase has frozen it."""
    peak_book: Any = None
    """The candidate scorer's examples of the training volumes the memo encodes
    (`vipet.inference.rescore.PeakBook`), with ``fit_scorer``."""
    step: int = 0
    phase: str = "vision"
    """"vision" or "language": which loader ``epoch`` and ``position`` refer to."""
    epoch: int = 0
    position: int = 0
    """Micro-batches of ``epoch`` this rank has consumed."""


def lr_lambda(
    step: int, warmup: int, total: int, vision_steps: int = 0, vision_scale: float = 1.0
) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``. With a
    vision phase (``vision_steps``) each phase has its own warm-up and cosine, the vision
    phase's scaled by ``vision_scale`` (its peak learning rate over the base one)."""
    scale = 1.0
    if vision_steps and step < vision_steps:
        total, scale = vision_steps, vision_scale
    elif vision_steps:
        step, total = step - vision_steps, total - vision_steps
    if step < warmup:
        return scale * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return scale * 0.5 * (1.0 + float(np.cos(np.pi * progress)))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(
    cfg: TrainConfig,
    tokenizer: Any,
    data_root: str | Path,
    cache_dir: str | Path,
    d: Dist | None = None,
) -> State:
    """Model, AdamW over trainable parameters, schedule and data loaders of ``cfg``."""
    d = d or Dist()
    o = cfg.optim
    _seed_all(o.seed)  # the same initial weights on every rank
    raw, tokenizer = build_for_training(cfg, tokenizer)
    raw = raw.to(d.device)
    raw.train()
    rank_print(d, trainable_summary(raw))
    if run_precision(cfg.precision, d.device) != cfg.precision:
        rank_print(
            d,
            f"precision {cfg.precision} is not native on this {d.device.type} (bf16 needs "
            "AVX512-BF16 or AMX on a CPU, fp16 a GPU): this run computes in fp32",
        )
    model: torch.nn.Module = raw
    if d.world > 1 and cfg.strategy == "fsdp":
        model = shard_model(raw, cfg, d)
    elif d.world > 1:
        ids = [d.device.index] if d.device.type == "cuda" else None
        model = DistributedDataParallel(raw, device_ids=ids, find_unused_parameters=True)
    # After sharding: FSDP2 swaps the parameters for sharded ones, which the optimizer
    # must hold (each rank then keeps the AdamW moments of its own shard only).
    params = [p for p in raw.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    vision_scale = (cfg.vision_lr or o.lr) / o.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        partial(
            lr_lambda,
            warmup=o.warmup_steps,
            total=o.max_steps,
            vision_steps=cfg.vision_steps,
            vision_scale=vision_scale,
        ),
    )
    n_visual = raw.visual_tokens_per_region
    k = raw.config.findings_slots
    # Every study stays in memory once read (float16 volumes, ~12 MB a study for
    # cpu-small): re-reading shards would cost more than the language steps themselves.
    # The vision phase's crops are cut from these same in-memory volumes.
    # With the memo (a frozen vision side, not under FSDP: `enter_language_phase`) the
    # language steps read each volume once, so items keep them in float16 as held (the
    # memo converts what it computes): converting every item's volumes showed up in
    # profiles of the language steps.
    memoised = _memoises(cfg, d)
    if cfg.question_slots == "head" and not memoised:
        raise ConfigError(
            "question_slots: head reads the memo's detections, and FSDP runs no memo: "
            "use strategy ddp"
        )
    dataset = partial(
        ViPetDataset,
        data_root,
        cache_dir,
        tokenizer=tokenizer,
        n_visual=n_visual,
        config=cfg.data,
        shard_cache_size=None,
        slots=k,
        volume_dtype=torch.float16 if memoised else torch.float32,
        finding_marker=FINDING_TOKEN if raw.config.slot_pointer else "",
    )
    train = dataset(cfg.train_split)
    base = RegionCountBatchSampler(train, o.batch_size, shuffle=True, seed=o.seed)
    sampler = ShardedBatches(base, d.rank, d.world)
    val_loader = None
    evaluating = cfg.val_split is not None and cfg.eval_every
    if evaluating:
        val = dataset(cfg.val_split)
        val_loader = _loader(val, RegionCountBatchSampler(val, o.batch_size, shuffle=False), 0)
    vision_sampler = vision_loader = vision_val_loader = None
    if cfg.vision_steps:
        if raw.diag_head is None:
            raise ConfigError("vision_steps needs a model with the findings head (pyramid stem)")
        crops = partial(
            VisionCrops,
            data_root,
            cache_dir,
            patch_size=raw.config.ct_encoder_settings.patch_size,
            head_stride=raw.config.ct_encoder_settings.pyramid_strides[0],
            config=cfg.crops,
            progress=d.main,
        )
        vtrain = crops(cfg.train_split, seed=o.seed, source=train)
        vbase = RegionCountBatchSampler(vtrain, cfg.vision_batch_size, shuffle=True, seed=o.seed)
        vision_sampler = ShardedBatches(vbase, d.rank, d.world)
        vision_loader = _loader(vtrain, vision_sampler, o.seed)
        if evaluating:
            vval = crops(cfg.val_split, seed=o.seed + 1, source=val)
            vval_sampler = RegionCountBatchSampler(vval, cfg.vision_batch_size, shuffle=False)
            vision_val_loader = _loader(vval, vval_sampler, 0)
    scaler = torch.amp.GradScaler(
        d.device.type, enabled=run_precision(cfg.precision, d.device) == "fp16"
    )
    _seed_all(o.seed + d.rank)  # per-rank draws (dropout) from here on
    return State(
        cfg=cfg,
        dist=d,
        model=model,
        raw_model=raw,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        sampler=sampler,
        loader=_loader(train, sampler, o.seed),
        val_loader=val_loader,
        scaler=scaler,
        paths=(Path(data_root), Path(cache_dir)),
        vision_sampler=vision_sampler,
        vision_loader=vision_loader,
        vision_val_loader=vision_val_loader,
        phase="vision" if cfg.vision_steps else "language",
    )


def _memoises(cfg: TrainConfig, d: Dist) -> bool:
    """Whether the language phase memoises a frozen vision side: after a vision phase
    with ``freeze_vision``, and not under FSDP (see `enter_language_phase`)."""
    return bool(cfg.vision_steps and cfg.freeze_vision) and not (
        d.world > 1 and cfg.strategy == "fsdp"
    )


def shard_units(raw: ViPetModel) -> list[nn.Module]:
    """The blocks FSDP shards one by one: each is all-gathered just before its forward
    (and backward) and freed after, so only one block's full weights live at a time.
    These are the transformer blocks of both 3D encoders and the language model's
    decoder layers, found by class name (``LlamaDecoderLayer``, ``Qwen2DecoderLayer``, …)
    so any causal LM, LoRA-wrapped or not, works; what is left belongs to the root."""
    blocks = [b for enc in (raw.ct_encoder, raw.pet_encoder) for b in enc.blocks]
    layers = [m for m in raw.language_model.modules() if type(m).__name__.endswith("DecoderLayer")]
    return [*blocks, *layers]


def _mixed_precision(cfg: TrainConfig, device: torch.device) -> MixedPrecisionPolicy:
    """Gather and compute in bf16/fp16 on CUDA, keep the sharded weights and reduce the
    gradients in fp32; fp32 throughout on CPU (as `_autocast`)."""
    precision = run_precision(cfg.precision, device)
    if device.type != "cuda" or precision == "fp32":
        return MixedPrecisionPolicy()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)


def shard_model(raw: ViPetModel, cfg: TrainConfig, d: Dist) -> ViPetModel:
    """Shard ``raw`` in place across the job with FSDP2: each of `shard_units`, then the
    root (embeddings, heads, fusion, projector — the parameters left over)."""
    mesh = init_device_mesh(d.device.type, (d.world,))
    policy = _mixed_precision(cfg, d.device)
    for unit in shard_units(raw):
        fully_shard(unit, mesh=mesh, mp_policy=policy)
    fully_shard(raw, mesh=mesh, mp_policy=policy)
    return raw


def _is_sharded(state: State) -> bool:
    return isinstance(state.model, FSDPModule)


# ---- steps --------------------------------------------------------------------------


def run_precision(precision: str, device: torch.device) -> str:
    """The precision a run of ``TrainConfig.precision`` computes in on ``device``: fp16
    only on CUDA, and bf16 only where the device runs it natively (`bf16_runs_fast`; an
    AVX2-only CPU emulates it, some 190x slower than fp32 for cpu-small's vision pass);
    else fp32."""
    if precision == "fp16" and device.type != "cuda":
        return "fp32"
    if precision == "bf16" and not bf16_runs_fast(device):
        return "fp32"
    return precision


def _autocast(state: State) -> contextlib.AbstractContextManager:
    dev = state.dist.device
    precision = run_precision(state.cfg.precision, dev)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(dev.type, dtype=dtype)


def compute_losses(
    state: State, batch: Mapping[str, Any], teacher: bool = False
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted total loss of one batch and its parts as floats: a batch of crops
    (vision phase, `vision_losses`) or of examples (`language_losses`). ``teacher``:
    finding slots on the report's lesions (``slot_teacher``) instead of the head's."""
    if "offsets" in batch:
        return vision_losses(state, batch)
    return language_losses(state, batch, teacher)


def _findings_parts(
    state: State,
    dense: Any,
    ids: torch.Tensor,
    tables: torch.Tensor,
    heat: torch.Tensor,
    diag: torch.Tensor,
) -> dict[str, torch.Tensor]:
    parts = findings_losses(dense, ids, tables, heat, state.cfg.heat_non_avid)
    parts["diag"] = diag_loss(region_logits(dense), diag)
    return parts


def vision_losses(state: State, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """The findings head's losses on a batch of crops (`vipet.data.vision`)."""
    dev = state.dist.device
    t = {k: v.to(dev) for k, v in batch.items()}
    with _autocast(state):
        out = state.model(input_ids=None, ct=t["ct"], pet=t["pet"], offsets=t["offsets"])
        parts = _findings_parts(
            state, out.dense, t["ids"], t["tables"], t["heat"], t["diag_targets"]
        )
    return combine(parts, state.cfg.loss)


def region_targets(
    lesion_ids: torch.Tensor, stride: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-volume voxel targets of the findings head: lesion ids ``(V, D, H, W)`` →
    ids on the head's grid (block maximum over ``stride``) and the heatmaps."""
    ids = F.max_pool3d(lesion_ids[:, None].float(), stride, stride)[:, 0].to(torch.uint8)
    centres = [[(c, s) for _, c, s in lesion_centres(v)] for v in ids.cpu()]
    return ids, heat_targets(centres, tuple(ids.shape[1:])).to(lesion_ids.device)


def language_losses(
    state: State, batch: Mapping[str, Any], teacher: bool = False
) -> tuple[torch.Tensor, dict[str, float]]:
    """LM cross-entropy (answer tokens), attention alignment, and — while the vision
    side still trains — the findings head's losses on whole volumes."""
    dev = state.dist.device
    t = {k: v.to(dev) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    weights = state.cfg.loss
    # The examples whose answers the alignment loss reads (`TrainConfig.align_tasks`); a
    # batch with none of them runs no attention maps (and the LM its fused attention).
    aligned = [i for i, task in enumerate(batch["task"]) if task in state.cfg.align_tasks]
    align = weights.align > 0 and bool(aligned)
    answer = t["labels"] != IGNORE_INDEX
    raw = state.raw_model
    vision = None
    if state.memo is not None:
        vision = state.memo.vision(raw, batch, _autocast(state))
    slots = (t["filed_lesions"], t["filed_attrs"]) if teacher else None
    if teacher and state.memo is not None and vision is not None:
        slots = state.memo.teacher(
            raw, t | {k: batch[k] for k in ("study_id", "region")}, vision.grid
        )
        if state.cfg.question_slots == "head" and vision.detections is not None:
            slots = slots_by_task(batch, slots, vision.detections, ("report",))
    # "token" is the LM's own loss; any other reduction reads the logits
    own_loss = state.cfg.lm_reduction == "token"
    with _autocast(state):
        out = state.model(
            input_ids=t["input_ids"],
            attention_mask=t["attention_mask"],
            labels=t["labels"] if own_loss else None,
            ct=t["ct"],
            pet=t["pet"],
            zones=t["zones"],
            teacher=slots,
            vision=vision,
            output_attentions=align,
            with_language=weights.lm > 0 or align,  # encoder pretraining needs no LM pass
        )
        lm = out.loss
        if not own_loss and out.logits is not None:
            lm = answer_cross_entropy(out.logits, t["labels"], state.cfg.lm_reduction)
        parts: dict[str, torch.Tensor | None] = {"lm": lm}
        dense = out.visual.dense if out.visual is not None else None
        if dense is not None and not _vision_frozen(state):
            stride = tuple(raw.config.ct_encoder_settings.pyramid_strides[0])
            ids, heat = region_targets(t["lesion_ids"].flatten(0, 1), stride)
            tables = t["lesion_tables"].flatten(0, 1)
            diag = t["diag_targets"].flatten(0, 1)
            parts.update(_findings_parts(state, dense, ids, tables, heat, diag))
        if align:
            # On the token grid: the voxel maps repeat each token's value over its patch,
            # so the loss is the same from the tokens and the ROI's voxels per token.
            maps = raw.attention_token_maps(out, t["input_ids"], answer).float()[aligned]
            grid = out.visual.grid
            inside = voxels_per_token(t["roi"][aligned], grid)
            per_token = math.prod(t["roi"].shape[-3:]) // math.prod(grid)
            parts["align"] = focal_tversky_from_counts(
                maps, inside, torch.full_like(inside, per_token)
            )
        if weights.contrastive > 0:
            image = out.visual.tokens.float().mean(dim=1)
            text = text_embedding(raw, t["input_ids"], answer)
            parts["contrastive"] = contrastive_loss(image, text)
    return combine(parts, weights)


@torch.no_grad()
def text_embedding(
    model: ViPetModel, input_ids: torch.Tensor, answer: torch.Tensor
) -> torch.Tensor:
    """``(B, hidden)``: the mean last hidden state of the language model over each
    sample's answer tokens (the report), read alone — no image tokens in the context.

    The text side is locked (no gradients): the contrastive stage teaches the vision side
    to land where the language model already puts the report, which is also where the
    projector must deliver its tokens later."""
    b = input_ids.shape[0]
    lengths = answer.sum(dim=1)
    ids = torch.full((b, int(lengths.max())), model.config.text_config.pad_token_id or 0)
    ids = ids.to(input_ids.device)
    mask = torch.zeros_like(ids)
    for i in range(b):
        n = int(lengths[i])
        ids[i, :n] = input_ids[i][answer[i]]
        mask[i, :n] = 1
    out = model.language_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    hidden = out.hidden_states[-1].float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)


def _as_micro_batches(batch: Any) -> list[Mapping[str, Any]]:
    return [batch] if isinstance(batch, Mapping) else list(batch)


def train_step(state: State, batch: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict:
    """One optimizer step over ``batch`` (one micro-batch, or ``grad_accum`` of them):
    forward, backward (gradients averaged over micro-batches), clip, step, schedule.
    Returns the mean loss parts, the learning rate used and the gradient norm."""
    micro = _as_micro_batches(batch)
    state.model.train()
    teacher = _slot_teacher_step(state)
    logs: list[dict[str, float]] = []
    for i, mb in enumerate(micro):
        with _gradient_sync(state, last=i == len(micro) - 1):
            total, log = compute_losses(state, mb, teacher=teacher)
            state.scaler.scale(total / len(micro)).backward()
        logs.append(log)
    state.scaler.unscale_(state.optimizer)
    params = [p for g in state.optimizer.param_groups for p in g["params"]]
    clip = state.cfg.optim.clip_norm or float("inf")
    norm = torch.nn.utils.clip_grad_norm_(params, clip)
    if isinstance(norm, DTensor):  # FSDP: a norm over this rank's shards, still to reduce
        norm = norm.full_tensor()
    lr = state.optimizer.param_groups[0]["lr"]
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    out = _mean(logs)
    out.update(lr=float(lr), grad_norm=float(norm))
    if state.cfg.slot_teacher > 0:
        out["slot_teacher"] = float(teacher)
    return out


def _slot_teacher_step(state: State) -> bool:
    """Whether this step's finding slots are teacher-forced: a draw fixed by the seed and
    the step number (not by any RNG state), so every process agrees and a resumed run
    makes the same choices."""
    share = state.cfg.slot_teacher
    if share <= 0 or state.step < state.cfg.vision_steps:
        return False
    if state.raw_model.findings_slots is None:
        raise ConfigError("slot_teacher needs a model with finding slots (findings_slots > 0)")
    return random.Random(state.cfg.optim.seed * 1_000_003 + state.step).random() < share


def _gradient_sync(state: State, last: bool) -> contextlib.AbstractContextManager:
    """Communicate gradients on the last micro-batch of a step only: the others
    accumulate locally (DDP's ``no_sync``; FSDP's ``set_requires_gradient_sync``)."""
    if isinstance(state.model, DistributedDataParallel) and not last:
        return state.model.no_sync()
    if isinstance(state.model, FSDPModule):
        state.model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def _mean(logs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    keys = sorted({k for log in logs for k in log})
    return {k: float(np.mean([log[k] for log in logs if k in log])) for k in keys}


def _all_reduce_mean(d: Dist, log: dict[str, float]) -> dict[str, float]:
    if d.world <= 1:
        return log
    keys = sorted(log)
    t = torch.tensor([log[k] for k in keys], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return {k: float(v) / d.world for k, v in zip(keys, t.tolist(), strict=True)}


@torch.no_grad()
def evaluate(state: State, loader: DataLoader) -> dict[str, float]:
    """Mean loss parts over ``loader`` (its first ``cfg.eval_batches`` batches when set:
    the same fixed subset every time) with the model in eval mode (no gradients)."""
    state.raw_model.eval()
    saved = state.model
    # No DDP hooks outside training. Under FSDP this is the sharded model itself: every
    # rank must run the same forwards, as every rank gathers each block's weights.
    state.model = state.raw_model
    try:
        limit = state.cfg.eval_batches or None
        logs = [compute_losses(state, batch)[1] for batch in itertools.islice(loader, limit)]
    finally:
        state.model = saved
        state.raw_model.train()
        if isinstance(saved, FSDPModule):
            saved.reshard()  # the root keeps its weights gathered after a forward
    return _mean(logs)


# ---- checkpoints --------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    out = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(rng: Mapping[str, Any]) -> None:
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
"""Gather sharded tensors to full CPU tensors on rank 0 (the other ranks get ``{}``)."""


def _strategy(state: State) -> str:
    if _is_sharded(state):
        return "fsdp"
    return "ddp" if state.dist.world > 1 else "single"


def full_model_state(state: State) -> dict[str, Any]:
    """The weights as ordinary full tensors. Under FSDP the shards are gathered: a
    collective every rank must enter; rank 0 gets the tensors, the others ``{}``."""
    if _is_sharded(state):
        return get_model_state_dict(state.raw_model, options=_FULL)
    return state.raw_model.state_dict()


def full_optimizer_state(state: State) -> dict[str, Any]:
    """The optimizer state as `torch.optim.Optimizer.state_dict` writes it (full tensors,
    keyed by parameter index), whatever the strategy; a collective under FSDP, as
    `full_model_state`."""
    if not _is_sharded(state):
        return state.optimizer.state_dict()
    named = get_optimizer_state_dict(state.raw_model, state.optimizer, options=_FULL)
    return _keyed_by_index(named) if named else {}


def _keyed_by_index(named: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter-name-keyed optimizer state (`get_optimizer_state_dict`) keyed by
    index instead, numbered through the param groups as ``Optimizer.state_dict`` does —
    so a checkpoint reads the same, and resumes, under either strategy."""
    index: dict[str, int] = {}
    groups = []
    for group in named["param_groups"]:
        ids = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**group, "params": ids})
    return {"state": {index[k]: v for k, v in named["state"].items()}, "param_groups": groups}


def _keyed_by_name(state: State, indexed: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `_keyed_by_index` for this run's optimizer (what
    `set_optimizer_state_dict` reads)."""
    names = {id(p): n for n, p in state.raw_model.named_parameters()}
    order = [names[id(p)] for g in state.optimizer.param_groups for p in g["params"]]
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in indexed["param_groups"]]
    return {"state": {order[i]: v for i, v in indexed["state"].items()}, "param_groups": groups}


def save_checkpoint(state: State) -> Path:
    """Write ``out_dir/checkpoint`` atomically: a temporary folder is filled by every
    rank (its RNG state) and rank 0 (the rest), then renamed over the old one. Under
    FSDP every rank first helps gather the full weights and optimizer state."""
    d, out = state.dist, Path(state.cfg.out_dir)
    final = out / CHECKPOINT
    tmp = out / f".{CHECKPOINT}.tmp"
    if d.main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier(d)
    torch.save(_rng_state(), tmp / f"rng_{d.rank}.pt")
    model, optimizer = full_model_state(state), full_optimizer_state(state)  # all ranks
    if d.main:
        torch.save(
            {
                "model": model,
                "optimizer": optimizer,
                "scheduler": state.scheduler.state_dict(),
                "scaler": state.scaler.state_dict(),
                "step": state.step,
                "phase": state.phase,
                "epoch": state.epoch,
                "position": state.position,
                "world": d.world,
                "strategy": _strategy(state),
            },
            tmp / _STATE_FILE,
        )
        (tmp / _CONFIG_FILE).write_text(json.dumps(to_dict(state.cfg), indent=2) + "\n")
    _barrier(d)
    if d.main:
        _fsync_dir(tmp)
        old = out / f".{CHECKPOINT}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)  # the commit point
        shutil.rmtree(old, ignore_errors=True)
    _barrier(d)
    return final


def _fsync_dir(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint of ``out_dir``: ``checkpoint/``, or the previous one when
    a crash fell between the two renames of `save_checkpoint`."""
    out = Path(out_dir)
    for name in (CHECKPOINT, f".{CHECKPOINT}.old"):
        if (out / name / _STATE_FILE).is_file():
            return out / name
    return None


def load_checkpoint(state: State, folder: Path) -> None:
    """Restore ``state`` (weights, optimizer, schedule, position, RNG) from ``folder``.
    Under FSDP every rank reads the full tensors (memory-mapped, not all held in memory
    at once) and keeps its own shard of them."""
    d = state.dist
    sharded = _is_sharded(state)
    blob = torch.load(
        folder / _STATE_FILE,
        map_location="cpu" if sharded else d.device,
        mmap=sharded,
        weights_only=False,
    )
    if blob["world"] != d.world:
        raise ValueError(
            f"checkpoint {folder} was written by {blob['world']} processes, "
            f"this run has {d.world}; the batch shards would differ"
        )
    if sharded:
        full = StateDictOptions(full_state_dict=True)
        set_model_state_dict(state.raw_model, blob["model"], options=full)
        optimizer = _keyed_by_name(state, blob["optimizer"])
        # Not strict: a parameter that has had no gradient yet (the language model in a
        # checkpoint of the vision phase) has no AdamW state, here as in the saved run.
        loose = StateDictOptions(full_state_dict=True, strict=False)
        set_optimizer_state_dict(state.raw_model, state.optimizer, optimizer, options=loose)
    else:
        weights = blob["model"]
        if state.raw_model.candidate_scorer is None:
            # a scorer fitted as the language phase started (question_slots "head") is
            # fitted again from the same weights when this run enters that phase
            weights = {k: v for k, v in weights.items() if not k.startswith("candidate_scorer.")}
        state.raw_model.load_state_dict(weights)
        state.optimizer.load_state_dict(blob["optimizer"])
    state.scheduler.load_state_dict(blob["scheduler"])
    state.scaler.load_state_dict(blob["scaler"])
    state.step, state.epoch, state.position = blob["step"], blob["epoch"], blob["position"]
    state.phase = blob.get("phase", "language")
    if state.phase == "language":
        enter_language_phase(state)
    rng = torch.load(folder / f"rng_{d.rank}.pt", weights_only=False)
    _set_rng_state(rng)


def read_checkpoint_config(folder: str | Path) -> TrainConfig:
    """The `TrainConfig` a checkpoint was written with."""
    data = json.loads((Path(folder) / _CONFIG_FILE).read_text(encoding="utf-8"))
    return from_dict(TrainConfig, data)


# ---- the loop -----------------------------------------------------------------------


def _phase_of(state: State) -> str:
    """The phase the next step belongs to."""
    return "vision" if state.step < state.cfg.vision_steps else "language"


def _vision_frozen(state: State) -> bool:
    """Whether `enter_language_phase` froze the vision side (its losses then teach
    nothing and are left out, memo or not)."""
    cfg = state.cfg
    return bool(cfg.vision_steps and cfg.freeze_vision) and state.phase == "language"


def enter_language_phase(state: State) -> None:
    """Freeze the vision side (``freeze_vision``, after a vision phase) and start
    memoising its outputs (not under FSDP)."""
    cfg = state.cfg
    if not (cfg.vision_steps and cfg.freeze_vision) or state.memo is not None:
        return
    for name in VISION_PARTS:
        part = getattr(state.raw_model, name)
        if part is not None:
            part.requires_grad_(False)
    # Not under FSDP: the memo calls the vision side outside the root's forward, where
    # the root's parameters are not gathered, and ranks would gather different numbers
    # of times (a volume new on one rank is memoised on another). The frozen vision side
    # then runs inside every forward instead.
    if _memoises(cfg, state.dist):
        if cfg.question_slots == "head":
            _fit_detector(state)  # before the memo: its detections are the questions' slots
        state.peak_book = _peak_book(state)
        add = None if state.peak_book is None else partial(state.peak_book.add, state.raw_model)
        state.memo = VisionMemo(on_encoded=add)
    rank_print(
        state.dist, "language phase: vision side frozen; " + trainable_summary(state.raw_model)
    )


def _fit_detector(state: State) -> None:
    """``question_slots`` "head": fit the candidate scorer on the training split and
    calibrate the slot thresholds on the validation split now, from the frozen vision
    side (the main process, on a saved copy; the others wait), and give both to the
    model — the memo's detections, which the questions are taught on, are then the
    saved model's. A resumed run fits them again from the same weights."""
    from vipet.model.checkpoint import load_vipet

    cfg, d = state.cfg, state.dist
    folder = Path(cfg.out_dir) / "detector"
    if d.main:
        save_vipet(state.raw_model, state.tokenizer, folder)
        _calibrate(cfg, folder, *state.paths, d)
    _barrier(d)
    fitted, _ = load_vipet(folder)
    _barrier(d)
    if d.main:
        shutil.rmtree(folder, ignore_errors=True)  # scorer.json, calibration.json stay
    raw = state.raw_model
    if fitted.candidate_scorer is not None:
        raw.candidate_scorer = fitted.candidate_scorer.to(d.device).eval().requires_grad_(False)
    raw.config.candidate_scorer = fitted.config.candidate_scorer
    raw.config.slot_thresholds = fitted.config.slot_thresholds
    raw.config.slot_places = fitted.config.slot_places


def _detector_fitted(state: State) -> bool:
    """Whether the scorer and thresholds were fitted as the language phase started
    (``question_slots`` "head", `_fit_detector`): then they are not fitted again after
    training. A run that ends before its language phase still fits them at the end."""
    return state.cfg.question_slots == "head" and state.memo is not None


def _peak_book(state: State) -> Any:
    """A `PeakBook` for the scorer fitted after training (``fit_scorer``), filled by the
    memo as it encodes the training volumes — when the memo's precision is the one the
    scorer reads peaks in at test time (`vision_autocast`: bf16 where the CPU runs it
    natively, else fp32), else None (the fit then encodes the split itself)."""
    cfg = state.cfg
    memo = run_precision(cfg.precision, state.dist.device)
    test_time = "bf16" if bf16_runs_fast("cpu") else "fp32"
    if not (cfg.fit_scorer and cfg.calibrate_slots and memo == test_time):
        return None
    if cfg.question_slots == "head":  # fitted before the memo: nothing to collect
        return None
    from vipet.inference.rescore import PeakBook, study_lesions

    return PeakBook(study_lesions(state.loader.dataset))


def _micro_batches(state: State, phase: str) -> Iterator[dict[str, Any]]:
    """Endless micro-batches of ``phase``, epoch after epoch, keeping ``epoch`` and
    ``position`` current."""
    vision = phase == "vision"
    sampler = state.vision_sampler if vision else state.sampler
    loader = state.vision_loader if vision else state.loader
    assert sampler is not None and loader is not None
    while True:
        sampler.set_epoch(state.epoch)
        if vision:
            loader.dataset.set_epoch(state.epoch)  # crops are drawn per (seed, epoch, index)
        sampler.start = state.position
        for batch in loader:
            state.position += 1
            yield batch
        state.epoch += 1
        state.position = 0


def _next_micro_batch(state: State, iters: dict[str, Iterator[dict[str, Any]]]) -> dict[str, Any]:
    """The next micro-batch of the current phase; entering the language phase resets the
    epoch counters (they count the loader of the phase) and freezes the vision side."""
    phase = _phase_of(state)
    if phase != state.phase:
        state.phase, state.epoch, state.position = phase, 0, 0
        iters.clear()
        if phase == "language":
            enter_language_phase(state)
    if phase not in iters:
        iters[phase] = _micro_batches(state, phase)
    return next(iters[phase])


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines after ``step`` (written by a run that died after its last checkpoint)."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["step"] <= step
    ]
    with atomic_output(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _append_metrics(path: Path, record: Mapping[str, Any], board: Any = None) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
    if board is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                board.add_scalar(f"{record['split']}/{key}", value, record["step"])


def _tensorboard(out: Path) -> Any:
    """A TensorBoard writer into ``out/tensorboard`` when tensorboard is installed (it is
    optional: metrics.jsonl and curves.png are always written)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def fit(
    cfg: TrainConfig,
    tokenizer: Any,
    data_root: str | Path,
    cache_dir: str | Path,
    on_step: Callable[[State, dict[str, float]], None] | None = None,
    until: int | None = None,
) -> dict[str, Any]:
    """Train up to ``cfg.optim.max_steps`` optimizer steps (continuing from the
    checkpoint when ``cfg.resume``); returns the last train log, last eval log and model
    path. ``until`` stops this call earlier (the schedule still spans ``max_steps``: a
    run cut in pieces follows the same curve). ``on_step(state, log)`` is called after
    every step (progress hooks, tests)."""
    d = init_distributed()
    try:
        return _fit(cfg, tokenizer, data_root, cache_dir, on_step, until, d)
    finally:
        gc.unfreeze()  # what _fit froze is collectable again once training is over
        if d.owns_group:
            dist.destroy_process_group()


def _fit(cfg, tokenizer, data_root, cache_dir, on_step, until, d: Dist) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    metrics = out / METRICS
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    state = setup(cfg, tokenizer, data_root, cache_dir, d)
    # The in-memory datasets are hundreds of thousands of long-lived Python objects per
    # hundred studies: out of the collector's sight from here, no step pays for
    # traversing them in a full collection.
    gc.freeze()
    ckpt = latest_checkpoint(out) if cfg.resume else None
    if ckpt is not None:
        load_checkpoint(state, ckpt)
        rank_print(d, f"resumed from {ckpt} at step {state.step}")
    if d.main:
        if ckpt is not None:
            _truncate_metrics(metrics, state.step)
        else:
            metrics.unlink(missing_ok=True)
    _barrier(d)
    o = cfg.optim
    batches: dict[str, Iterator[dict[str, Any]]] = {}
    bar = tqdm(total=o.max_steps, initial=state.step, disable=not d.main, desc="train", leave=False)
    log: dict[str, float] = {}
    val_log: dict[str, float] = {}
    stop = o.max_steps if until is None else min(until, o.max_steps)
    board = _tensorboard(out) if d.main else None
    while state.step < stop:
        micro = [_next_micro_batch(state, batches) for _ in range(o.grad_accum)]
        log = _all_reduce_mean(d, train_step(state, micro))
        bar.update(1)
        bar.set_postfix(loss=f"{log['loss/total']:.4f}")
        if d.main and state.step % cfg.log_every == 0:
            _append_metrics(metrics, {"step": state.step, "split": "train", **log}, board)
        if cfg.eval_every and state.step % cfg.eval_every == 0:
            vision = state.step <= cfg.vision_steps and state.vision_val_loader is not None
            loader = state.vision_val_loader if vision else state.val_loader
            val_log = evaluate(state, loader) if loader is not None else {}
        if cfg.eval_every and val_log and state.step % cfg.eval_every == 0 and d.main:
            _append_metrics(metrics, {"step": state.step, "split": "val", **val_log}, board)
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            save_checkpoint(state)
        if on_step is not None:
            on_step(state, log)
    bar.close()
    model_dir = out / "model"
    # Under FSDP the full weights are gathered (every rank) and passed to save_pretrained,
    # so the saved model is an ordinary unsharded one.
    weights = full_model_state(state) if _is_sharded(state) else None
    if d.main:
        save_vipet(state.raw_model, state.tokenizer, model_dir, state_dict=weights)
        rank_print(d, f"saved model to {model_dir}")
        if metrics.is_file():
            rank_print(d, f"training curves: {plot_curves(metrics, title=out.name)}")
        if board is not None:
            board.close()
        loaded = None  # the saved model, once the calibration has it in memory
        if (
            cfg.calibrate_slots
            and state.raw_model.config.findings_slots
            and not _detector_fitted(state)
        ):
            loaded = _calibrate(cfg, model_dir, data_root, cache_dir, d, state.peak_book)
        if cfg.fit_yes_no:
            loaded = _fit_yes_no(state, model_dir, data_root, cache_dir, loaded)
            if cfg.fit_evidence:
                _fit_evidence(cfg, model_dir, data_root, cache_dir, d, loaded)
    _barrier(d)
    return {"step": state.step, "train": log, "val": val_log, "model": model_dir}


def _fit_yes_no(
    state: State, model_dir: Path, data_root, cache_dir, loaded: tuple[Any, Any] | None
) -> tuple[Any, Any]:
    """The yes/no head of the saved model (its scorer and thresholds fitted; ``loaded``:
    it and its tokenizer when the calibration holds them), on the training split; the
    studies from the memo and the scorer's peak book where they hold them
    (`memo_contexts`), else encoded from the cache. The fit in ``out_dir/yes_no.json``."""
    from vipet.inference.yes_no import fit_yes_no_model, memo_contexts, yes_no_table
    from vipet.model.checkpoint import load_vipet

    cfg = state.cfg
    loaded = loaded or load_vipet(model_dir)
    contexts = None
    if (
        state.memo is not None
        and state.peak_book is not None
        and loaded[0].candidate_scorer is not None
    ):
        contexts = memo_contexts(loaded[0], state.memo, state.peak_book)
    fit = fit_yes_no_model(
        model_dir,
        Path(data_root),
        Path(cache_dir),
        cfg.train_split,
        loaded=loaded,
        contexts=contexts,
        dataset=state.loader.dataset,
        langs=cfg.data.langs,
    )
    atomic_write_bytes(
        Path(cfg.out_dir) / "yes_no.json", (json.dumps(fit.to_dict(), indent=2) + "\n").encode()
    )
    rank_print(
        state.dist,
        f"yes/no head fitted on {cfg.train_split}:\n{yes_no_table(fit, cfg.train_split)}",
    )
    return loaded


def _fit_evidence(
    cfg: TrainConfig, model_dir: Path, data_root, cache_dir, d: Any, loaded: tuple[Any, Any]
) -> None:
    """The yes/no head's evidence rows of the saved model (``loaded``: it and its
    tokenizer, the head fitted), on the validation split; the fit in
    ``out_dir/yes_no_evidence.json``."""
    from vipet.inference.yes_no import evidence_table, fit_evidence_model

    assert cfg.val_split is not None
    fit = fit_evidence_model(
        model_dir, Path(data_root), Path(cache_dir), cfg.val_split, loaded=loaded
    )
    atomic_write_bytes(
        Path(cfg.out_dir) / "yes_no_evidence.json",
        (json.dumps(fit.to_dict(), indent=2) + "\n").encode(),
    )
    rank_print(
        d, f"yes/no evidence weighed on {cfg.val_split}:\n{evidence_table(fit, cfg.val_split)}"
    )


def _calibrate(
    cfg: TrainConfig, model_dir: Path, data_root, cache_dir, d: Dist, book: Any = None
) -> tuple[Any, Any]:
    """Per-class slot thresholds on the validation split, into the saved model; the
    result also in ``out_dir/calibration.json`` (with ``fit_scorer``, the candidate
    scorer fitted on the training split first, its fit in ``out_dir/scorer.json``;
    ``book``: the examples of the training volumes the language phase encoded; with
    ``fit_places``, the places of each type first, in ``out_dir/places.json``). Returns
    the saved model and its tokenizer as they now are on disk."""
    from vipet.inference.calibrate import calibrate_model, calibration_table
    from vipet.model.checkpoint import load_vipet

    loaded = load_vipet(model_dir)
    if cfg.fit_places:
        from vipet.inference.places import fit_places_model, places_table

        try:
            placed = fit_places_model(model_dir, Path(data_root), cfg.train_split, loaded=loaded)
        except InputError as exc:  # no lesion lists: the slots keep the head's own places
            rank_print(d, f"places not fitted: {exc}")
        else:
            atomic_write_bytes(
                Path(cfg.out_dir) / "places.json",
                (json.dumps(placed.to_dict(), indent=2) + "\n").encode(),
            )
            rank_print(d, places_table(placed))
    if cfg.fit_scorer:
        from vipet.inference.rescore import fit_scorer_model, scorer_table

        fit = fit_scorer_model(
            model_dir, Path(data_root), Path(cache_dir), cfg.train_split, loaded=loaded, book=book
        )
        atomic_write_bytes(
            Path(cfg.out_dir) / "scorer.json", (json.dumps(fit.to_dict(), indent=2) + "\n").encode()
        )
        rank_print(d, f"candidate scorer fitted on {cfg.train_split}:\n{scorer_table(fit)}")
    result = calibrate_model(
        model_dir, Path(data_root), Path(cache_dir), cfg.val_split, loaded=loaded
    )
    atomic_write_bytes(
        Path(cfg.out_dir) / "calibration.json",
        (json.dumps(result.to_dict(), indent=2) + "\n").encode(),
    )
    rank_print(d, f"slot thresholds calibrated on {cfg.val_split}:\n{calibration_table(result)}")
    return loaded
