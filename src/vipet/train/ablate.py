"""Ablations: which part of ViPET-VLM earns its keep, at one fixed training budget.

Each *variant* is the base training config plus a few overrides (`VARIANTS`): the
fusion swapped (concat, one modality only) or a regularisation loss switched off. Every
variant trains on the same data, with the same seed, the same ``optim.max_steps`` (the
budget; ``variant_overrides`` give a variant whose steps cost more fewer of them, for
the same time) and the same common overrides, sharing one tokenizer (trained once on the train
split, as ``vipet train`` does) and one sample cache. Then each is scored the same way:
reports and answers generated on the test split and scored by the evaluation runner
(optionally on the split's first ``max_studies`` only, for quick runs), and the
attention-in-lesion scores of `vipet.evaluation.attention`.

Layout of ``out``::

    tokenizer/            shared tokenizer (reused when present)
    cache/                sample cache (when no other cache is given)
    <variant>/            the variant's training run: metrics.jsonl, model/, ...
    <variant>/variant.json   its resolved config and training time
    <variant>/predictions_<split>_<lang>.jsonl
    <variant>/scores.json    its scores and the settings they were taken with
    ablation.json, ablation.md   all results (rewritten after every variant)

A variant whose ``model/`` already exists is not trained again (a different config for
it in the same folder is refused), and its scores are reused when taken with the same
settings, so an ablation that crashed resumes variant by variant; a variant cut
mid-training continues from its own checkpoint, as ``resume`` is on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vipet.config import load_config, to_dict
from vipet.errors import ConfigError, InputError
from vipet.io.atomic import atomic_write_bytes
from vipet.train.config import TrainConfig

VARIANTS: dict[str, list[str]] = {
    "full": [],
    "concat": ["fusion=concat"],
    "ct_only": ["fusion=ct_only"],
    "pet_only": ["fusion=pet_only"],
    "no_align": ["loss.align=0"],
    # "without the findings loss": every loss that supervises the findings head (region
    # labels, lesion-centre heatmap, lesion map, per-lesion attributes). With none of them
    # a vision phase would train nothing, so its steps go to the language phase (the
    # step budget stays the same), and the slots are not teacher-forced: their features
    # come from an unsupervised head.
    "no_diag": [
        "loss.diag=0",
        "loss.heat=0",
        "loss.lesion=0",
        "loss.attributes=0",
        "vision_steps=0",
        "slot_teacher=0",
    ],
}
"""Each variant's config overrides on top of the base config (read-only registry)."""

VARIANT_RECORD = "variant.json"
SCORES = "scores.json"
LANGS = ("vi", "en")


@dataclass(frozen=True)
class AblationConfig:
    """One ablation run (see the module docstring)."""

    config: Path
    """Base training config YAML (e.g. configs/cpu-small.yaml)."""
    data: Path
    """The ViPET dataset every variant trains and is scored on."""
    out: Path = Path("runs/ablation")
    """Folder of the variants' runs and the result table."""
    cache: Path | None = None
    """Sample cache (built when missing); None: ``out/cache``."""
    variants: tuple[str, ...] = tuple(VARIANTS)
    """Variants to run, names of `VARIANTS`, in table order."""
    overrides: tuple[str, ...] = ()
    """``key.sub=value`` overrides common to every variant (before the variant's own)."""
    variant_overrides: tuple[str, ...] = ()
    """``variant:key.sub=value`` overrides of one variant (after its own): how a variant
    whose steps cost more gets the same time budget with fewer steps, e.g.
    ``no_diag:optim.max_steps=600`` (its vision side trains on whole volumes at every
    step)."""
    split: str = "test"
    """Split the variants are scored on."""
    lang: str = "vi"
    """Language of the generated reports and answers scored."""
    max_studies: int | None = None
    """Score only the split's first N studies (None: all)."""
    workers: int = 2
    """Worker processes for building the cache."""
    vocab_size: int = 4000
    """Vocabulary of the shared tokenizer (as ``vipet train`` trains it)."""
    report_tokens: int = 400
    """Longest generated report, in tokens (smoke runs may cut it)."""
    by_region: bool = False
    """Write each report region by region (`vipet.inference.predictor.Predictor.report`),
    as for a model trained on region reports only."""

    def __post_init__(self) -> None:
        names = tuple(self.variants)
        object.__setattr__(self, "variants", names)
        object.__setattr__(self, "overrides", tuple(self.overrides))
        object.__setattr__(self, "variant_overrides", tuple(self.variant_overrides))
        for item in self.variant_overrides:
            name, sep, rest = item.partition(":")
            if not sep or "=" not in rest or name not in VARIANTS:
                raise ConfigError(
                    f"variant override {item!r} is not 'variant:key=value' with a variant of "
                    f"{', '.join(VARIANTS)}"
                )
        unknown = [v for v in names if v not in VARIANTS]
        if unknown:
            raise ConfigError(
                f"unknown ablation variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}"
            )
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"variants must be distinct names from {', '.join(VARIANTS)}")
        if self.lang not in LANGS:
            raise ConfigError(f"lang must be one of {', '.join(LANGS)}, got {self.lang!r}")
        if self.max_studies is not None and (
            isinstance(self.max_studies, bool)
            or not isinstance(self.max_studies, int)
            or self.max_studies < 1
        ):
            raise ConfigError(f"max_studies must be a positive integer, got {self.max_studies!r}")
        if self.report_tokens < 1:
            raise ConfigError(f"report_tokens must be at least 1, got {self.report_tokens}")

    @property
    def cache_dir(self) -> Path:
        return self.cache if self.cache is not None else self.out / "cache"

    @property
    def scoring(self) -> dict[str, Any]:
        """What a variant's scores depend on besides its model (the cached scores of a
        variant are reused only when this matches)."""
        return {
            "split": self.split,
            "lang": self.lang,
            "max_studies": self.max_studies,
            "report_tokens": self.report_tokens,
            "by_region": self.by_region,
        }


def parse_variants(text: str) -> tuple[str, ...]:
    """``"full,concat"`` → ``("full", "concat")`` (blanks ignored)."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def variant_overrides(ab: AblationConfig, variant: str) -> list[str]:
    """A variant's own overrides: its `VARIANTS` entry, then its ``variant_overrides``."""
    extra = [o.partition(":")[2] for o in ab.variant_overrides if o.partition(":")[0] == variant]
    return [*VARIANTS[variant], *extra]


def variant_config(ab: AblationConfig, variant: str) -> TrainConfig:
    """The training config of one variant: base YAML, common overrides, the variant's
    overrides, ``out_dir`` = ``out/<variant>`` and ``resume`` on."""
    cfg = load_config(TrainConfig, ab.config, [*ab.overrides, *variant_overrides(ab, variant)])
    try:
        return replace(cfg, out_dir=str(ab.out / variant), resume=True)
    except ValueError as exc:
        raise ConfigError(f"invalid config of variant {variant!r}: {exc}") from exc


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    """The config values a trained variant must match to be reused (paths and the
    resume switch excluded)."""
    d = json.loads(json.dumps(to_dict(cfg), default=str))
    d.pop("out_dir", None)
    d.pop("resume", None)
    return d


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, ensure_ascii=False, default=str).encode())


def shared_tokenizer(ab: AblationConfig, cfg: TrainConfig) -> Any:
    """The tokenizer every variant trains with: ``out/tokenizer`` when present, else
    trained on the dataset's train split and saved there. None when the config brings
    its own (``init_from`` or ``lm_path``)."""
    from vipet.data.tokenizer import (
        corpus_from_dataset,
        load_tokenizer,
        save_tokenizer,
        train_tokenizer,
    )

    if cfg.init_from or cfg.lm_path:
        return None
    folder = ab.out / "tokenizer"
    if (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return load_tokenizer(folder)
    tok = train_tokenizer(corpus_from_dataset(ab.data), vocab_size=ab.vocab_size)
    save_tokenizer(tok, folder)
    return tok


def _model_saved(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def train_variant(
    ab: AblationConfig, variant: str, tokenizer: Any, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train one variant unless its model exists; returns its record (config, minutes,
    whether it trained now)."""
    from vipet.train.trainer import fit

    cfg = variant_config(ab, variant)
    vdir = Path(cfg.out_dir)
    record_path = vdir / VARIANT_RECORD
    previous: dict[str, Any] = {}
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"unreadable variant record ({exc})", record_path) from exc
    if previous and previous.get("config") != _comparable(cfg):
        raise ConfigError(
            f"{vdir} was trained with another config than variant {variant!r} now asks "
            "for; remove that folder or choose another --out"
        )
    if _model_saved(vdir / "model"):
        log(f"[{variant}] model exists in {vdir / 'model'}: not trained again")
        return {**previous, "config": _comparable(cfg), "trained_now": False}
    log(f"[{variant}] training {cfg.optim.max_steps} steps -> {vdir}")
    t0 = time.perf_counter()
    fit(cfg, tokenizer, ab.data, ab.cache_dir)
    record = {
        "variant": variant,
        "overrides": variant_overrides(ab, variant),
        "config": _comparable(cfg),
        "train_minutes": (time.perf_counter() - t0) / 60.0,
    }
    _write_json(record_path, record)
    return {**record, "trained_now": True}


def score_variant(
    ab: AblationConfig, variant: str, progress: bool = True, batch_size: int = 4
) -> dict[str, Any]:
    """Generated reports and answers scored by the runner, and attention in lesion.
    Written to ``out/<variant>/scores.json`` with the scoring settings."""
    from vipet.evaluation.attention import attention_in_roi
    from vipet.evaluation.runner import evaluate
    from vipet.inference.predictor import predict_dataset
    from vipet.model.checkpoint import load_vipet

    model_dir = ab.out / variant / "model"
    preds = predict_dataset(
        model_dir,
        ab.data,
        ab.split,
        ab.lang,
        progress=progress,
        max_studies=ab.max_studies,
        report_tokens=ab.report_tokens,
        by_region=ab.by_region,
    )
    lines = "\n".join(json.dumps(row, ensure_ascii=False) for row in preds) + "\n"
    atomic_write_bytes(ab.out / variant / f"predictions_{ab.split}_{ab.lang}.jsonl", lines.encode())
    metrics = evaluate(preds, ab.data, ab.split, ab.lang, meteor=False, max_studies=ab.max_studies)
    model, tokenizer = load_vipet(model_dir)
    attention = attention_in_roi(
        model,
        tokenizer,
        ab.data,
        ab.cache_dir,
        split=ab.split,
        lang=ab.lang,
        max_studies=ab.max_studies,
        batch_size=batch_size,
        progress=progress,
    )
    scores = {"metrics": metrics, "attention": attention}
    _write_json(ab.out / variant / SCORES, {"scoring": ab.scoring, **scores})
    return scores


def cached_scores(ab: AblationConfig, variant: str) -> dict[str, Any] | None:
    """The scores an earlier run wrote for this variant with the same scoring settings,
    or None (then the variant is scored again)."""
    path = ab.out / variant / SCORES
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a damaged cache only costs a rescoring
    if not isinstance(saved, dict) or saved.get("scoring") != ab.scoring:
        return None
    return {"metrics": saved.get("metrics"), "attention": saved.get("attention")}


# ---- the table ------------------------------------------------------------------------

COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("F1-T", ("metrics", "clinical", "f1_t")),
    ("F1-TP", ("metrics", "clinical", "f1_tp")),
    ("F1-TF", ("metrics", "clinical", "f1_tf")),
    ("F1-TPF", ("metrics", "clinical", "f1_tpf")),
    ("closed VQA", ("metrics", "vqa", "closed_accuracy")),
    ("BLEU-4", ("metrics", "nlg", "bleu4")),
    ("ROUGE-L", ("metrics", "nlg", "rouge_l")),
    ("attn mass in lesion", ("attention", "mass_in_lesion")),
    ("pointing hit", ("attention", "pointing_hit")),
    ("steps", ("max_steps",)),
    ("train min", ("train_minutes",)),
)


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _mass_cell(attention: Any) -> str:
    """Mass in lesion with its ratio to chance: lesions fill a fraction of a percent of
    a region, so the raw share alone reads as zero for every variant."""
    mass = _get(attention, ("mass_in_lesion",))
    chance = _get(attention, ("chance_mass",))
    if mass is None:
        return "–"
    if not chance:
        return f"{mass:.4f}"
    return f"{mass:.4f} ({mass / chance:.1f}x)"


def markdown(results: dict[str, Any]) -> str:
    """The ablation table with a caption saying what was compared and how to read it."""
    budget = results["budget"]
    vision = budget.get("vision_steps") or 0  # absent from tables written before it was kept
    phases = f"; the first {vision} of them the vision phase" if vision else ""
    subset = (
        f"the first {results['max_studies']} studies of"
        if results.get("max_studies")
        else "all studies of"
    )
    chance = next(
        (
            r["attention"]
            for r in results["variants"].values()
            if _get(r, ("attention", "n_regions"))
        ),
        None,
    )
    lines = [
        f"# Ablation ({Path(results['config']).name})",
        "",
        f"Budget: {budget['max_steps']} optimizer steps x {budget['batch_size']} examples "
        f"(grad accum {budget['grad_accum']}{phases}), seed {budget['seed']}; scored on "
        f"{subset} the {results['split']} split ({results['lang']}).",
    ]
    if chance is not None:
        lines.append(
            f"Attention: {chance['n_regions']} regions with lesions; a uniform map puts "
            f'{chance["chance_mass"]:.4f} of its mass in the lesion (chance; "(Nx)" in '
            "the table is the mass over chance). Pointing hit: the map's peak patch touches "
            "the lesion dilated by one voxel; a random patch does so at "
            f"{_cell(chance.get('chance_pointing'))} (chance)."
        )
    lines += [
        "",
        "| variant | " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, res in results["variants"].items():
        cells = []
        for label, path in COLUMNS:
            if label == "attn mass in lesion":
                cells.append(_mass_cell(res.get("attention")))
            else:
                digits = {"train min": 1, "steps": 0}.get(label, 3)
                cells.append(_cell(_get(res, path), digits))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_results(ab: AblationConfig, results: dict[str, Any]) -> None:
    _write_json(ab.out / "ablation.json", results)
    atomic_write_bytes(ab.out / "ablation.md", markdown(results).encode())


def run_ablation(
    ab: AblationConfig, progress: bool = True, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train (or reuse) and score every variant of ``ab``; writes ``ablation.json`` and
    ``ablation.md`` after each variant and returns the results."""
    from vipet.model.presets import model_grid
    from vipet.preprocess.cache import MANIFEST, ensure_cache

    base = variant_config(ab, ab.variants[0])
    if not (ab.cache_dir / MANIFEST).is_file():
        log(f"building the sample cache on the {model_grid(base.model)} grid -> {ab.cache_dir}")
    ensure_cache(ab.data, ab.cache_dir, model_grid(base.model), ab.workers, progress)
    tokenizer = shared_tokenizer(ab, base)
    results: dict[str, Any] = {
        "config": str(ab.config),
        "data": str(ab.data),
        "split": ab.split,
        "lang": ab.lang,
        "max_studies": ab.max_studies,
        "overrides": list(ab.overrides),
        "budget": {
            "max_steps": base.optim.max_steps,
            "batch_size": base.optim.batch_size,
            "grad_accum": base.optim.grad_accum,
            "seed": base.optim.seed,
            "vision_steps": base.vision_steps,
        },
        "base_config": _comparable(base),
        "variants": {},
    }
    for variant in ab.variants:
        record = train_variant(ab, variant, tokenizer, log)
        scores = None if record["trained_now"] else cached_scores(ab, variant)
        if scores is None:
            log(f"[{variant}] scoring on {ab.split} ({ab.lang})")
            scores = score_variant(ab, variant, progress)
        else:
            log(f"[{variant}] scores of an earlier run reused")
        results["variants"][variant] = {
            "overrides": variant_overrides(ab, variant),
            "max_steps": variant_config(ab, variant).optim.max_steps,
            "train_minutes": record.get("train_minutes"),
            "trained_now": record["trained_now"],
            **scores,
        }
        _write_results(ab, results)
    return results


__all__ = [
    "COLUMNS",
    "VARIANTS",
    "AblationConfig",
    "cached_scores",
    "markdown",
    "parse_variants",
    "run_ablation",
    "score_variant",
    "shared_tokenizer",
    "train_variant",
    "variant_config",
]
