"""The `vipet` command line: a thin face over library functions.

Every user-facing failure is a `ViPetError`; `main` prints it as one line and exits 1.
``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, time
from pathlib import Path
from typing import Annotated

import typer

from vipet import __version__
from vipet.errors import ConfigError, ViPetError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="ViPET: PET/CT study I/O, preprocessing, and (in later releases) reports and questions.",
)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """ViPET command line."""


# Options shared by every command that loads a study.
SeriesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--series",
        help="DICOM series to use (SeriesInstanceUID or SeriesNumber); repeat for CT and PT.",
    ),
]
WeightOpt = Annotated[
    float | None, typer.Option("--weight-kg", help="Patient weight, overriding PatientWeight.")
]
DoseOpt = Annotated[
    float | None,
    typer.Option("--dose-mbq", help="Injected activity (MBq), overriding RadionuclideTotalDose."),
]
HalfLifeOpt = Annotated[
    float | None,
    typer.Option(
        "--half-life-s", help="Radionuclide half-life (s), overriding RadionuclideHalfLife."
    ),
]
InjOpt = Annotated[
    str | None,
    typer.Option(
        "--injection-time",
        help="Injection clock time HH:MM[:SS], overriding RadiopharmaceuticalStartTime.",
    ),
]
StudyOpt = Annotated[
    str | None,
    typer.Option("--study", help="Study id inside a collection (ViMed-PET name, nnU-Net case)."),
]
LayoutOpt = Annotated[
    str | None, typer.Option("--layout", help="Force a layout instead of detecting it.")
]
PetUnitsOpt = Annotated[
    str | None, typer.Option("--pet-units", help="PET units for NIfTI: SUVbw, BQML or raw.")
]
UnevenOpt = Annotated[
    str, typer.Option("--uneven-slices", help="Uneven DICOM slice spacing: resample or refuse.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Preprocessing config YAML.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Config override key.sub=value (repeatable).")
]


def _parse_time(text: str | None) -> time | None:
    if text is None:
        return None
    for fmt in ("%H:%M:%S", "%H:%M", "%H%M%S"):
        try:
            return datetime.strptime(text, fmt).time()
        except ValueError:
            continue
    raise ConfigError(f"--injection-time {text!r}: expected HH:MM or HH:MM:SS")


def _options(
    *,
    series: list[str] | None = None,
    weight_kg: float | None = None,
    dose_mbq: float | None = None,
    injection_time: str | None = None,
    half_life_s: float | None = None,
    study: str | None = None,
    pet_units: str | None = None,
    uneven: str = "resample",
):
    from vipet.io import LoadOptions, Units

    units = None
    if pet_units is not None:
        try:
            units = Units(pet_units)
        except ValueError:
            raise ConfigError(f"--pet-units {pet_units!r}: choose from SUVbw, BQML, raw") from None
    return LoadOptions(
        series=tuple(series or ()),
        weight_kg=weight_kg,
        dose_mbq=dose_mbq,
        injection_time=_parse_time(injection_time),
        half_life_s=half_life_s,
        study_id=study,
        pet_units=units,
        uneven_slices=uneven,
    )


def _preprocess_config(config: Path | None, overrides: list[str] | None):
    from vipet.config import load_config
    from vipet.preprocess import PreprocessConfig

    return load_config(PreprocessConfig, config, overrides or [])


@app.command()
def inspect(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="A study: DICOM folder, AutoPET folder, nnU-Net file/folder, ViMed-PET root, or a CT and a PET NIfTI file."
        ),
    ],
    png: Annotated[
        Path | None, typer.Option("--png", help="Write a fused CT/PET + MIP picture here.")
    ] = None,
    series: SeriesOpt = None,
    weight_kg: WeightOpt = None,
    dose_mbq: DoseOpt = None,
    injection_time: InjOpt = None,
    half_life_s: HalfLifeOpt = None,
    study: StudyOpt = None,
    layout: LayoutOpt = None,
    pet_units: PetUnitsOpt = None,
    uneven_slices: UnevenOpt = "resample",
    config: ConfigOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Print a study's layout, geometry, units, SUV calibration and body regions."""
    from vipet.io import load_study

    opts = _options(
        series=series,
        weight_kg=weight_kg,
        dose_mbq=dose_mbq,
        injection_time=injection_time,
        half_life_s=half_life_s,
        study=study,
        pet_units=pet_units,
        uneven=uneven_slices,
    )
    cfg = _preprocess_config(config, overrides)
    s = load_study(paths, opts, layout=layout)
    _print_study(s, cfg, png)


def _print_study(s, cfg, png: Path | None) -> None:
    from vipet.preprocess.pipeline import region_boxes

    typer.echo(f"layout: {s.layout}")
    for line in s.describe():
        typer.echo(line)
    if s.suv is not None:
        for line in s.suv.describe():
            typer.echo("  " + line)
    elif s.pet.units.value != "SUVbw":
        typer.echo(f"  PET is in {s.pet.units.value}: no SUVbw calibration available")
    for key, value in sorted(s.meta.items()):
        typer.echo(f"  meta {key}: {value}")
    boxes, basis = region_boxes(s, cfg)
    typer.echo(f"regions (placed by {basis}):")
    for b in boxes:
        typer.echo(
            f"  {b.name:15s} z {b.z_top:8.1f} .. {b.z_bottom:8.1f} mm ({b.height_mm:.0f} mm)"
        )
    if png is not None:
        from vipet.viz.study_figure import write_study_figure

        written = write_study_figure(s, png, boxes)
        typer.echo(f"picture: {written}")


@app.command()
def preprocess(
    dataset: Annotated[Path, typer.Argument(help="A dataset folder (or one study).")],
    out: Annotated[
        Path, typer.Option("--out", help="Cache folder to write shards and manifest.json into.")
    ],
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Parallel worker processes.")
    ] = 1,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    weight_kg: WeightOpt = None,
    dose_mbq: DoseOpt = None,
    injection_time: InjOpt = None,
    half_life_s: HalfLifeOpt = None,
    pet_units: PetUnitsOpt = None,
) -> None:
    """Preprocess every study of DATASET into region samples cached in OUT."""
    from vipet.io import find_studies
    from vipet.preprocess.cache import build_cache

    cfg = _preprocess_config(config, overrides)
    opts = _options(
        weight_kg=weight_kg,
        dose_mbq=dose_mbq,
        injection_time=injection_time,
        half_life_s=half_life_s,
        pet_units=pet_units,
    )
    refs = find_studies(dataset)
    typer.echo(f"{len(refs)} studies found in {dataset}")
    report = build_cache(refs, out, cfg, workers=workers, options=opts)
    typer.echo(
        f"built {report.built}, reused {report.reused}, failed {len(report.failed)} -> {out / 'manifest.json'}"
    )
    if report.failed:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's outputs.")] = Path(
        "demo_out"
    ),
    quick: Annotated[
        bool,
        typer.Option("--quick", help="16 studies and 80 steps: checks that all runs (~2 min)."),
    ] = False,
    config: Annotated[Path, typer.Option("--config", help="cpu-small's training config.")] = Path(
        "configs/cpu-small.yaml"
    ),
    lang: Annotated[str, typer.Option("--lang", help="vi or en.")] = "vi",
) -> None:
    """The whole pipeline on this CPU: phantom -> preprocess -> train cpu-small ->
    evaluation table -> one test study's report, answers and summary picture."""
    from vipet.demo import PLANS, run_demo
    from vipet.reports.vocab import check_lang

    try:
        check_lang(lang)
    except ValueError as exc:
        raise ConfigError(f"--lang {lang!r}: {exc}") from None
    run_demo(out, PLANS["quick" if quick else "full"], config, lang, log=typer.echo)


@app.command()
def phantom(
    n: Annotated[int, typer.Option("--n", min=1, help="Number of studies.")] = 20,
    out: Annotated[Path, typer.Option("--out", help="New folder for the dataset.")] = Path(
        "data/phantom"
    ),
    seed: Annotated[int, typer.Option("--seed", help="Base seed: same seed, same dataset.")] = 0,
    layout: Annotated[
        str, typer.Option("--layout", help="vimed (default), nifti (AutoPET-like) or dicom.")
    ] = "vimed",
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Parallel worker processes.")
    ] = 1,
) -> None:
    """Write a ViPET-Phantom dataset: whole-body PET/CT with ground truth, reports, questions."""
    import time as clock

    from vipet.phantom.dataset import write_dataset

    t0 = clock.perf_counter()
    desc = write_dataset(out, n, seed=seed, layout=layout, workers=workers)
    took = clock.perf_counter() - t0
    bal = desc["balance"]
    typer.echo(
        f"wrote {n} studies ({layout}) to {out} in {took:.1f} s ({took / n:.2f} s/study, {workers} worker(s))"
    )
    typer.echo("splits: " + ", ".join(f"{k} {len(v)}" for k, v in desc["splits"].items()))
    typer.echo(
        f"lesions: {bal['lesions']} in {bal['studies'] - bal['normal_studies']} studies; normal studies: {bal['normal_studies']}"
    )
    for key in ("type", "location", "region", "fdg_avid"):
        typer.echo(f"  {key}: " + ", ".join(f"{k} {v}" for k, v in bal[key].items()))


@app.command()
def extract(
    report: Annotated[Path, typer.Argument(help="A report: .txt, or a ViMed-PET report .json.")],
    lang: Annotated[
        str | None, typer.Option("--lang", help="vi or en (detected when left out).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or table.")] = "json",
) -> None:
    """Lesions stated in a report (offline, rule-based): type, location, size, SUVmax, FDG."""
    import json

    from vipet.reports.extract import extract_findings

    if not report.is_file():
        raise ConfigError("report file not found", report)
    try:
        text = report.read_text(encoding="utf-8")
        source = json.loads(text) if report.suffix.lower() == ".json" else text
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not a readable report ({exc})".splitlines()[0], report) from exc
    found = [f.to_dict() for f in extract_findings(source, lang)]
    if fmt == "json":
        typer.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    for f in found:
        typer.echo(
            f"{f['type']:18s} {f['location']:11s} {f['location_detail'] or '':22s} {f['laterality']:6s} "
            f"{f['size_mm'] or '-':>6} {f['suvmax'] or '-':>6} {'FDG+' if f['fdg_avid'] else 'FDG-'}"
        )


@app.command()
def evaluate(
    data: Annotated[
        Path, typer.Option("--data", help="A ViPET dataset (e.g. vipet phantom output).")
    ],
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Predictions JSONL to score.")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="A saved ViPET model to run.")
    ] = None,
    split: Annotated[str, typer.Option("--split")] = "test",
    lang: Annotated[str, typer.Option("--lang", help="vi or en.")] = "vi",
    out: Annotated[
        Path, typer.Option("--out", help="Folder for metrics.json/.md and plots.")
    ] = Path("runs/eval"),
    baselines: Annotated[
        bool, typer.Option("--baselines/--no-baselines", help="Also score the built-in baselines.")
    ] = True,
    meteor: Annotated[
        bool, typer.Option("--meteor/--no-meteor", help="METEOR through Java when present.")
    ] = True,
    max_studies: Annotated[
        int | None,
        typer.Option(
            "--max-studies", min=1, help="Score only the split's first N studies (quick runs)."
        ),
    ] = None,
    by_region: Annotated[
        bool,
        typer.Option(
            "--by-region/--whole-study",
            help="With --checkpoint: write each report region by region (one generation per "
            "region's images) instead of in one pass over the whole study.",
        ),
    ] = False,
) -> None:
    """Score reports and answers: NLG, clinical F1-T/TP/TF/TPF, VQA; table and plots.
    Without --predictions or --checkpoint: the baselines and the reference-report ceiling."""
    from vipet.evaluation.runner import (
        BASELINES,
        baseline_predictions,
        markdown_table,
        read_predictions,
        write_results,
    )
    from vipet.evaluation.runner import evaluate as run_eval

    if predictions is not None and checkpoint is not None:
        raise ConfigError("give one of --predictions PRED.jsonl or --checkpoint CKPT, not both")
    m = None if meteor else False
    results = {}

    def score(preds: list[dict]) -> dict:
        return run_eval(preds, data, split, lang, meteor=m, max_studies=max_studies)

    if checkpoint is not None:
        from vipet.inference.predictor import predict_dataset
        from vipet.io.atomic import atomic_write_bytes

        preds = predict_dataset(
            checkpoint, data, split, lang, max_studies=max_studies, by_region=by_region
        )
        results[checkpoint.name] = score(preds)
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in preds)
        atomic_write_bytes(out / "predictions.jsonl", lines.encode())  # to read and re-score
    elif predictions is not None:
        results[predictions.stem] = score(read_predictions(predictions))
    else:  # the floor (baselines) and the ceiling (the reference reports scored as predictions)
        from vipet.evaluation.runner import reference_predictions

        results["reference reports (ceiling)"] = score(reference_predictions(data, split, lang))
        baselines = True
    if baselines:
        for kind in BASELINES:
            results[f"baseline: {kind}"] = score(baseline_predictions(data, split, lang, kind))
    files = write_results(results, out)
    typer.echo(markdown_table(results))
    typer.echo("wrote " + ", ".join(str(f) for f in files))


def _ensure_cache(data: Path, cache: Path, grid: tuple[int, int, int], workers: int) -> Path:
    """The sample cache of ``data`` on ``grid`` (a model's region grid), built when missing."""
    from vipet.preprocess.cache import MANIFEST, ensure_cache

    if not (cache / MANIFEST).is_file():
        typer.echo(f"building the sample cache on the {grid} grid -> {cache}")
    ensure_cache(data, cache, grid, workers=workers)
    return cache


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", help="Training config YAML (configs/).")],
    data: Annotated[
        Path, typer.Option("--data", help="A ViPET dataset (e.g. vipet phantom output).")
    ],
    overrides: Annotated[list[str] | None, typer.Argument(help="key.sub=value overrides.")] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Preprocessed-sample cache (built when missing).")
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            "--tokenizer", help="A saved tokenizer; else one is trained on the train split."
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Workers for building the cache.")
    ] = 2,
) -> None:
    """Train ViPET-VLM: cache the dataset on the model's grid, then fit (torchrun-ready)."""
    from vipet.config import load_config
    from vipet.data.tokenizer import corpus_from_dataset, load_tokenizer, train_tokenizer
    from vipet.train.config import TrainConfig
    from vipet.train.trainer import fit

    cfg = load_config(TrainConfig, config, overrides or [])
    from vipet.model.presets import model_grid

    cache = _ensure_cache(
        data, cache or Path(cfg.out_dir) / "cache", model_grid(cfg.model), workers
    )
    if tokenizer:
        tok = load_tokenizer(tokenizer)
    elif cfg.init_from or cfg.lm_path:
        tok = None  # the earlier stage's or the pretrained LM's tokenizer is used
    else:
        tok = train_tokenizer(corpus_from_dataset(data), vocab_size=4000)
    result = fit(cfg, tok, data, cache)
    typer.echo(f"done: {result}")


@app.command()
def ablate(
    config: Annotated[Path, typer.Option("--config", help="Base training config YAML.")],
    data: Annotated[
        Path, typer.Option("--data", help="A ViPET dataset (e.g. vipet phantom output).")
    ],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key.sub=value overrides for every variant.")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", help="Preprocessed-sample cache (built when missing)."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder of the variants' runs and ablation.json/.md.")
    ] = Path("runs/ablation"),
    variants: Annotated[
        str,
        typer.Option("--variants", help="Comma-separated variants to run, in table order."),
    ] = "full,concat,ct_only,pet_only,no_align,no_diag",
    variant_override: Annotated[
        list[str] | None,
        typer.Option(
            "--variant-override",
            help="variant:key=value for one variant only (repeatable), e.g. "
            "no_diag:optim.max_steps=600 for the same time budget.",
        ),
    ] = None,
    lang: Annotated[str, typer.Option("--lang", help="vi or en.")] = "vi",
    max_studies: Annotated[
        int | None,
        typer.Option("--max-studies", min=1, help="Score only the test split's first N studies."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Workers for building the cache.")
    ] = 2,
    by_region: Annotated[
        bool,
        typer.Option(
            "--by-region/--whole-study",
            help="Write each report region by region (for models trained on region reports).",
        ),
    ] = False,
) -> None:
    """Train every variant (fusion swapped, a loss off) at the same budget and seed, then
    score each: clinical F1, VQA, NLG and attention in lesion -> OUT/ablation.json/.md."""
    from vipet.train.ablate import AblationConfig, markdown, parse_variants, run_ablation

    ab = AblationConfig(
        config=config,
        data=data,
        out=out,
        cache=cache,
        variants=parse_variants(variants),
        overrides=tuple(overrides or ()),
        variant_overrides=tuple(variant_override or ()),
        lang=lang,
        max_studies=max_studies,
        workers=workers,
        by_region=by_region,
    )
    results = run_ablation(ab, log=typer.echo)
    typer.echo(markdown(results))
    typer.echo(f"wrote {out / 'ablation.json'}, {out / 'ablation.md'}")


@app.command()
def calibrate(
    checkpoint: Annotated[
        Path,
        typer.Option("--checkpoint", help="A saved ViPET model folder (vipet train's model/)."),
    ],
    data: Annotated[Path, typer.Option("--data", help="The ViPET dataset it was trained on.")],
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Preprocessed-sample cache (built when missing).")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split to tune on (never test).")] = "val",
    min_support: Annotated[
        int, typer.Option("--min-support", min=1, help="Candidates a class needs to move.")
    ] = 5,
    write: Annotated[
        bool, typer.Option("--write/--dry-run", help="Store the thresholds in config.json.")
    ] = True,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Workers for building the cache.")
    ] = 2,
    fit_scorer: Annotated[
        bool,
        typer.Option(
            "--fit-scorer",
            help="First fit the candidate scorer on the train split (saves the model), "
            "then tune the thresholds on its scores.",
        ),
    ] = False,
    fit_places: Annotated[
        bool,
        typer.Option(
            "--fit-places",
            help="First list where each lesion type lies in each region on the train split "
            "(saves the model): a detection is placed among its type's locations there.",
        ),
    ] = False,
    fit_yes_no: Annotated[
        bool,
        typer.Option(
            "--fit-yes-no",
            help="Last, fit the yes/no head on the train split under the calibrated "
            "detections (saves the model).",
        ),
    ] = False,
    fit_evidence: Annotated[
        bool,
        typer.Option(
            "--fit-evidence",
            help="After the yes/no head, weigh it against the detector's candidates for "
            "what each closed question asks, on --split (saves the model).",
        ),
    ] = False,
) -> None:
    """Tune the finding slots' threshold per lesion class (type x avidity) on the
    validation split, and store them in the model's config.json (no weight changes);
    with --fit-scorer, fit the second look at every heatmap peak first; with
    --fit-places, list where each lesion type lies first; with --fit-yes-no, fit the
    yes/no head last; with --fit-evidence, weigh the (fitted) head against the detector's
    candidates on --split."""
    from vipet.inference.calibrate import calibrate_model, calibration_table
    from vipet.model.checkpoint import load_vipet

    if split == "test":
        raise ConfigError("calibrate on the validation (or train) split, never on test")
    if (fit_scorer or fit_places or fit_yes_no or fit_evidence) and not write:
        raise ConfigError(
            "--fit-scorer, --fit-places, --fit-yes-no and --fit-evidence save the model: "
            "not with --dry-run"
        )
    if fit_evidence and split == "train":
        raise ConfigError(
            "--fit-evidence weighs the detector on studies it never trained on: use --split val"
        )
    loaded = load_vipet(checkpoint)  # refuses a folder that is no model, before any cache work
    grid = loaded[0].config.ct_encoder_settings.image_size
    cache = _ensure_cache(data, cache or checkpoint.parent / "cache", grid, workers)
    if fit_scorer:
        from vipet.inference.rescore import fit_scorer_model, scorer_table

        fit = fit_scorer_model(checkpoint, data, cache, loaded=loaded)
        typer.echo(scorer_table(fit))
    if fit_places:
        from vipet.inference.places import fit_places_model, places_table

        typer.echo(places_table(fit_places_model(checkpoint, data, loaded=loaded)))
    result = calibrate_model(
        checkpoint, data, cache, split, min_support=min_support, write=write, loaded=loaded
    )
    typer.echo(calibration_table(result))
    if fit_yes_no:
        from vipet.inference.yes_no import fit_yes_no_model, yes_no_table

        typer.echo(yes_no_table(fit_yes_no_model(checkpoint, data, cache, loaded=loaded)))
    if fit_evidence:
        from vipet.inference.yes_no import evidence_table, fit_evidence_model

        fitted = fit_evidence_model(checkpoint, data, cache, split, loaded=loaded)
        typer.echo(evidence_table(fitted, split))
    typer.echo(f"wrote {checkpoint / 'config.json'}" if write else "dry run: nothing written")


@app.command()
def curves(
    run: Annotated[Path, typer.Argument(help="A training run folder (holds metrics.jsonl).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="PNG to write (default RUN/curves.png).")
    ] = None,
) -> None:
    """Draw a run's training curves (every loss part, train and validation) as a PNG."""
    from vipet.train.curves import plot_curves

    typer.echo(f"wrote {plot_curves(run / 'metrics.jsonl', out, title=run.name)}")


CheckpointOpt = Annotated[
    Path, typer.Option("--checkpoint", help="A saved ViPET model folder (vipet train's model/).")
]
LangOpt = Annotated[str, typer.Option("--lang", help="vi or en.")]
StudyPaths = Annotated[
    list[Path],
    typer.Argument(
        help="A study: DICOM folder, AutoPET folder, nnU-Net file/folder, ViMed-PET root "
        "(with --study), a ViPET dataset's study folder, or a CT and a PET NIfTI file."
    ),
]


def _study_and_predictor(paths, checkpoint, study, layout, pet_units, lang):
    from vipet.inference.predictor import Predictor
    from vipet.io import load_study
    from vipet.reports.vocab import check_lang

    try:
        check_lang(lang)
    except ValueError as exc:
        raise ConfigError(f"--lang {lang!r}: {exc}") from None
    s = load_study(paths, _options(study=study, pet_units=pet_units), layout=layout)
    return s, Predictor.from_checkpoint(checkpoint)


@app.command()
def report(
    paths: StudyPaths,
    checkpoint: CheckpointOpt,
    lang: LangOpt = "vi",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for report.txt/.json, attention maps, summary.png."),
    ] = None,
    study: StudyOpt = None,
    layout: LayoutOpt = None,
    pet_units: PetUnitsOpt = None,
) -> None:
    """Write a study's report, region by region, with the consistency guard's marks,
    attention maps (NIfTI on the CT grid) and a summary picture."""
    from vipet.inference.bundle import make_report, write_report

    s, predictor = _study_and_predictor(paths, checkpoint, study, layout, pet_units, lang)
    typer.echo(f"encoding {s.id} ({s.layout}) and writing its report ...", err=True)
    rep = make_report(predictor, s, lang)
    dest = out or Path("reports") / s.id
    written = write_report(rep, s, dest, checkpoint.name, predictor.model)
    typer.echo(rep.text)
    typer.echo("guard: " + ", ".join(f"{k} {v}" for k, v in rep.guard_counts.items()), err=True)
    typer.echo(f"written: {dest} ({len(written)} files)", err=True)


@app.command()
def ask(
    paths: StudyPaths,
    question: Annotated[str, typer.Argument(help="The question (quoted), after the study.")],
    checkpoint: CheckpointOpt,
    lang: LangOpt = "vi",
    region: Annotated[
        str | None,
        typer.Option("--region", help="Ask about one region: head_neck, chest, abdomen_pelvis."),
    ] = None,
    study: StudyOpt = None,
    layout: LayoutOpt = None,
    pet_units: PetUnitsOpt = None,
) -> None:
    """Answer one question about a study."""
    s, predictor = _study_and_predictor(paths, checkpoint, study, layout, pet_units, lang)
    ctx = predictor.encode(s)
    _check_region(region, ctx.regions)
    typer.echo(predictor.ask(ctx, question, lang, region=region))


def _check_region(region: str | None, regions: list[str]) -> None:
    if region is not None and region not in regions:
        raise ConfigError(f"--region {region!r}: choose from {regions}")


@app.command()
def chat(
    paths: StudyPaths,
    checkpoint: CheckpointOpt,
    lang: LangOpt = "vi",
    region: Annotated[
        str | None, typer.Option("--region", help="Talk about one region only.")
    ] = None,
    study: StudyOpt = None,
    layout: LayoutOpt = None,
    pet_units: PetUnitsOpt = None,
) -> None:
    """Ask question after question about one study (encoded once); an empty line or
    end of input ends the conversation."""
    s, predictor = _study_and_predictor(paths, checkpoint, study, layout, pet_units, lang)
    ctx = predictor.encode(s)
    _check_region(region, ctx.regions)
    typer.echo(f"{s.id}: ask a question (empty line to end)", err=True)
    history: list[tuple[str, str]] = []
    for line in sys.stdin:
        question = line.strip()
        if not question:
            break
        answer = predictor.ask(ctx, question, lang, region=region, history=history)
        history.append((question, answer))
        typer.echo(answer)
        sys.stdout.flush()


@app.command()
def serve(
    checkpoint: CheckpointOpt,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", min=1)] = 512,
    ttl_min: Annotated[
        float, typer.Option("--ttl-min", help="Minutes an unused study is kept.")
    ] = 60.0,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="Longest model call per request.")
    ] = 120.0,
) -> None:
    """Serve the model over HTTP with the browser viewer (open http://HOST:PORT/)."""
    try:
        import uvicorn

        from vipet.serve.app import ServeSettings, create_app
    except ImportError as exc:
        raise ConfigError(f"vipet serve needs fastapi and uvicorn ({exc})") from None
    settings = ServeSettings(
        max_upload_bytes=max_upload_mb * 1024**2, ttl_s=ttl_min * 60, request_timeout_s=timeout_s
    )
    app_ = create_app(checkpoint, settings)
    typer.echo(f"ViPET viewer on http://{host}:{port}/ (API docs: /docs)", err=True)
    uvicorn.run(app_, host=host, port=port, log_level="info")


@app.command()
def version() -> None:
    """Print the ViPET version."""
    typer.echo(__version__)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, exit codes, ``--debug`` for tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]  # accepted anywhere, not only before the command
    try:
        # Standalone mode handles usage errors and --help itself and ends in SystemExit.
        app(args=args, prog_name="vipet")
    except ViPetError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
