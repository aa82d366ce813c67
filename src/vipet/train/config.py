"""Typed configuration of a training run (`vipet.train.trainer.fit`).

One dataclass per concern, composed in `TrainConfig`; load one from YAML plus dotted
overrides with ``vipet.config.load_config(TrainConfig, path, ["optim.lr=1e-4"])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vipet.data.dataset import TASKS, DataConfig
from vipet.data.vision import CropConfig
from vipet.model.fusion import FUSIONS
from vipet.model.language import LoraSettings
from vipet.model.presets import PRESETS
from vipet.model.vipet import PARTS
from vipet.train.losses import LM_REDUCTIONS, LossWeights

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
STRATEGIES: tuple[str, ...] = ("ddp", "fsdp")
QUESTION_SLOTS: tuple[str, ...] = ("teacher", "head")
"""Where a question example's finding slots come from (`TrainConfig.question_slots`)."""
"""How the processes of a ``torchrun`` job share the model (`TrainConfig.strategy`)."""


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _non_negative_float(name: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to zero at ``max_steps``."""

    lr: float = 3e-4
    """Peak learning rate (reached at the end of warm-up)."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up from 0 to ``lr``."""
    max_steps: int = 1000
    """Optimizer steps of the whole run (the schedule ends here)."""
    batch_size: int = 2
    """Examples per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    clip_norm: float = 1.0
    """Gradient-norm clip (0 disables clipping)."""
    seed: int = 0
    """Seed of the model initialisation, batch order and every random draw of training."""

    def __post_init__(self) -> None:
        _non_negative_float("lr", self.lr)
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        _non_negative_float("weight_decay", self.weight_decay)
        _non_negative_float("clip_norm", self.clip_norm)
        _positive_int("warmup_steps", self.warmup_steps, minimum=0)
        _positive_int("max_steps", self.max_steps)
        _positive_int("batch_size", self.batch_size)
        _positive_int("grad_accum", self.grad_accum)
        _positive_int("seed", self.seed, minimum=0)


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run: model, data, optimisation, losses, logging and output."""

    model: str = "tiny"
    """Model preset name (`vipet.model.presets.PRESETS`): the vision parts, and the
    language model unless ``lm_path`` or ``init_from`` gives one."""
    fusion: str | None = None
    """Replace the preset's fusion (`vipet.model.fusion.FUSIONS`; ablations)."""
    init_from: str | None = None
    """A model saved by an earlier stage (its ``out_dir/model``) to start from; its
    tokenizer is used."""
    lm_path: str | None = None
    """A pretrained causal LM in a local folder (GPU presets), loaded instead of the
    preset's randomly initialised one."""
    lora: LoraSettings | None = None
    """LoRA adapters on the language model (its base weights then stay frozen)."""
    trainable: tuple[str, ...] = ("all",)
    """Parts trained in this stage ("all", or names from `vipet.model.vipet.PARTS`);
    the others are frozen."""
    data: DataConfig = field(default_factory=DataConfig)
    """Which examples are made and how tasks are mixed."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer, schedule, batch size and seed."""
    loss: LossWeights = field(default_factory=LossWeights)
    """Weights of the LM, findings and attention-alignment losses."""
    vision_steps: int = 0
    """The first this many optimizer steps train the vision side alone, on crops of the
    region volumes centred on lesions (`vipet.data.vision`, ``crops``): the findings
    head's losses (diag, heat, lesion, attributes), no language-model pass. The language
    phase follows, when the findings the LM will read already mean something. Needs a
    model with the findings head."""
    vision_lr: float | None = None
    """Peak learning rate of the vision phase (None: ``optim.lr``). Each phase has its own
    warm-up (``optim.warmup_steps``) and cosine decay to 0."""
    vision_batch_size: int = 8
    """Crops per micro-batch in the vision phase."""
    crops: CropConfig = field(default_factory=CropConfig)
    """How the vision phase cuts region volumes into crops."""
    freeze_vision: bool = True
    """After the vision phase, freeze what it trained (encoders, fusion, findings head):
    the language phase then trains the projector, findings token, slots and the LM, and
    computes each training volume's vision outputs once (they cannot change)."""
    slot_teacher: float = 0.0
    """Share of the language-phase steps whose finding slots sit on the lesions the
    report describes instead of the head's detections (teacher forcing,
    `vipet.model.findings_slots.teacher_detections`), so the LM learns to write what a
    slot says; which steps is fixed by the seed and the step number. Needs a model with
    finding slots. Validation always uses the head's."""
    question_slots: str = "teacher"
    """Whose finding slots a question example reads on a teacher-forced step
    (`QUESTION_SLOTS`): "teacher", the lesions the answer is about, like a report;
    "head", the head's own detections of that training volume, with the candidate
    scorer and the slot thresholds fitted and calibrated when the language phase starts
    (instead of after training), so they are the detector the saved model keeps. Why:
    taught on perfect slots, the LM answers "no" to every lesion its slots lack, while
    the head misses most of the small lesions only CT shows; taught on the head's slots,
    it learns how far to trust them — which kinds of lesion the head misses, and how
    often an empty slot list is a normal study (docs/training.md, run 26). Reports keep
    the teacher's slots: they are written slot by slot. "head" needs the memo (a vision
    phase, ``freeze_vision``, not FSDP) and ``calibrate_slots``."""
    align_tasks: tuple[str, ...] = TASKS
    """The tasks (`vipet.data.dataset.TASKS`) whose answers the alignment loss
    (``loss.align``) pulls onto the ROI. All of them in the published setup; cpu-small
    aligns its reports only. Why: a report sentence describes a lesion, and its ROI (the
    lesion mask) is where it should look; a yes/no answer has no such place — "is the
    study normal?" must read every region's findings — and aligned to the lesions it
    learnt not to read its finding slots at all (docs/training.md, run 14)."""
    lm_reduction: str = "token"
    """How the LM cross-entropy averages its answer tokens (`vipet.train.losses.LM_REDUCTIONS`):
    "token" over the batch's answer tokens (HF's), "sample" per example first, so that a
    yes/no answer weighs as much as a report. By tokens, a report section is ~55 tokens and an
    answer ~3, so a batch's questions make ~5 % of the LM loss (scripts/answer_lengths.py;
    docs/training.md, run 18)."""
    heat_non_avid: float = 1.0
    """Weight of a non-FDG-avid lesion's centre in the findings head's heatmap loss
    (`vipet.model.diag_head.findings_losses`). Such a lesion is seen on CT alone: with
    1 the heat at non-avid nodes and nodules stayed under 0.1 where avid ones reached
    0.5–0.6, on the training studies too (scripts/lesion_heat.py; docs/training.md,
    run 21)."""
    train_split: str = "train"
    """Split trained on."""
    val_split: str | None = "val"
    """Split evaluated every ``eval_every`` steps (None: no evaluation)."""
    calibrate_slots: bool = False
    """After training, tune the finding slots' threshold per lesion class on
    ``val_split`` and store them in the saved model (`vipet.inference.calibrate`; the
    same as ``vipet calibrate`` afterwards). Needs finding slots and a validation split."""
    fit_scorer: bool = False
    """After training and before the calibration, fit the candidate scorer — a second
    look at every heatmap peak that says whether a lesion is there and which kind — on
    the peaks the trained head gives on ``train_split`` (`vipet.inference.rescore`; the
    same as ``vipet calibrate --fit-scorer`` afterwards). Needs ``calibrate_slots``: the
    thresholds then apply to the scorer's output."""
    fit_places: bool = False
    """After training and before the calibration, list the fine locations each lesion
    type takes in each region's volume on ``train_split`` and store them in the saved
    model: a detection is then placed at the head's likeliest location among its type's
    there (`vipet.inference.places`;
    the same as ``vipet calibrate --fit-places`` afterwards). Needs ``calibrate_slots``.
    Why: the head reads type and place from separate maps and pairs them as no report
    does (a node "in the upper lobe"); the language model rewrites such a slot as another
    finding, and the type the head had right is lost (docs/training.md, runs 34-37)."""
    fit_yes_no: bool = False
    """Last, fit the yes/no head on ``train_split``: which of "yes" and "no" to answer,
    read off the LM's state under the saved model's own detections
    (`vipet.model.yes_no_head`, `vipet.inference.yes_no`; the same as ``vipet calibrate
    --fit-yes-no`` afterwards). The language phase's memo and the scorer's peak book
    give the training studies without encoding them again. Why: taught on perfect slots,
    the LM answers as its slots say, and the head's slots miss most small lesions seen on
    CT only (docs/training.md, run 27)."""
    fit_evidence: bool = False
    """After the yes/no head, weigh it against the detector's candidates for what each
    closed question asks — the strongest of the named type in the named place, slots or
    not — on ``val_split``, which the detector never trained on
    (`vipet.inference.evidence`, `vipet.inference.yes_no.fit_evidence_model`; the same
    as ``vipet calibrate --fit-evidence`` afterwards). Needs ``fit_yes_no``. Why: the
    slots show only what passed its threshold, so neither the LM nor the head sees a
    faint lesion just below it (docs/training.md, run 39)."""
    eval_every: int = 0
    """Evaluate every this many optimizer steps (0: never)."""
    eval_batches: int = 0
    """Evaluate on the first this many validation batches only (0: all of them); the
    validation order is fixed, so every evaluation sees the same examples."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many optimizer steps (0: never)."""
    log_every: int = 1
    """Append a metrics line every this many optimizer steps."""
    out_dir: str = "runs/default"
    """Folder of metrics.jsonl, checkpoint/ and model/."""
    precision: str = "fp32"
    """"fp32", "bf16" or "fp16" autocast. On CUDA both; on CPU "bf16" only, and only
    where oneDNN runs bf16 convolutions and matmuls natively (CPUs with AVX512-BF16 or
    AMX, about 1.8x faster for cpu-small's encoders there); elsewhere the run computes in
    fp32 and says so (an AVX2-only CPU emulates bf16, some 190x slower than fp32 for
    cpu-small's vision pass: benchmarks/precision.py; `trainer.run_precision`)."""
    resume: bool = False
    """Continue from ``out_dir/checkpoint`` when it exists."""
    strategy: str = "ddp"
    """How the processes of a ``torchrun`` job share the model: "ddp" replicates it
    (DistributedDataParallel); "fsdp" shards parameters, gradients and optimizer state
    across the processes with PyTorch FSDP2 (`torch.distributed.fsdp.fully_shard`), so a
    7B language model + LoRA fits. A single process ignores it."""

    def __post_init__(self) -> None:
        if self.model not in PRESETS:
            raise ValueError(f"unknown model preset {self.model!r}; choose from {sorted(PRESETS)}")
        if self.fusion is not None and self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from {sorted(FUSIONS)}")
        parts = ("all", *PARTS)
        bad = [t for t in self.trainable if t not in parts]
        if bad or not self.trainable:
            raise ValueError(
                f"trainable must name parts from {list(parts)}, got {self.trainable!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        _positive_int("eval_every", self.eval_every, minimum=0)
        _positive_int("checkpoint_every", self.checkpoint_every, minimum=0)
        _positive_int("eval_batches", self.eval_batches, minimum=0)
        _positive_int("log_every", self.log_every)
        _positive_int("vision_steps", self.vision_steps, minimum=0)
        _positive_int("vision_batch_size", self.vision_batch_size)
        if self.vision_lr is not None:
            _non_negative_float("vision_lr", self.vision_lr)
        if not isinstance(self.freeze_vision, bool):
            raise ValueError(f"freeze_vision must be true or false, got {self.freeze_vision!r}")
        if not (isinstance(self.slot_teacher, int | float) and 0.0 <= self.slot_teacher <= 1.0):
            raise ValueError(f"slot_teacher must be a share in [0, 1], got {self.slot_teacher!r}")
        bad_tasks = [t for t in self.align_tasks if t not in TASKS]
        if bad_tasks or not self.align_tasks:
            raise ValueError(
                f"align_tasks must name tasks from {list(TASKS)}, got {self.align_tasks!r}"
            )
        if not self.heat_non_avid > 0:
            raise ValueError(f"heat_non_avid must be > 0, got {self.heat_non_avid!r}")
        if self.lm_reduction not in LM_REDUCTIONS:
            raise ValueError(
                f"lm_reduction must be one of {list(LM_REDUCTIONS)}, got {self.lm_reduction!r}"
            )
        if not self.out_dir:
            raise ValueError("out_dir must not be empty")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
        if not isinstance(self.calibrate_slots, bool):
            raise ValueError(f"calibrate_slots must be true or false, got {self.calibrate_slots!r}")
        if self.calibrate_slots and self.val_split is None:
            raise ValueError("calibrate_slots tunes on the validation split: set val_split")
        if not isinstance(self.fit_scorer, bool):
            raise ValueError(f"fit_scorer must be true or false, got {self.fit_scorer!r}")
        if not isinstance(self.fit_places, bool):
            raise ValueError(f"fit_places must be true or false, got {self.fit_places!r}")
        if self.fit_places and not self.calibrate_slots:
            raise ValueError(
                "fit_places needs calibrate_slots: the thresholds are tuned on the placed slots"
            )
        if not isinstance(self.fit_yes_no, bool):
            raise ValueError(f"fit_yes_no must be true or false, got {self.fit_yes_no!r}")
        if not isinstance(self.fit_evidence, bool):
            raise ValueError(f"fit_evidence must be true or false, got {self.fit_evidence!r}")
        if self.fit_evidence and not (self.fit_yes_no and self.val_split is not None):
            raise ValueError(
                "fit_evidence weighs the yes/no head on the validation split: it needs "
                "fit_yes_no and val_split"
            )
        if self.fit_scorer and not self.calibrate_slots:
            raise ValueError(
                "fit_scorer needs calibrate_slots: the thresholds are tuned on its scores"
            )
        if self.question_slots not in QUESTION_SLOTS:
            raise ValueError(
                f"question_slots must be one of {list(QUESTION_SLOTS)}, got {self.question_slots!r}"
            )
        if self.question_slots == "head" and not (
            self.vision_steps and self.freeze_vision and self.calibrate_slots
        ):
            raise ValueError(
                "question_slots: head reads the head's calibrated detections of a frozen "
                "vision side: it needs vision_steps, freeze_vision and calibrate_slots"
            )
        if not isinstance(self.resume, bool):
            raise ValueError(f"resume must be true or false, got {self.resume!r}")
        if self.val_split is not None and self.val_split == self.train_split:
            raise ValueError(f"val_split and train_split are both {self.train_split!r}")
