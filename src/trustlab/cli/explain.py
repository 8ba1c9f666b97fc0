"""``trustlab concepts``: Concept Gradient attributions of a vision model's prediction for each image."""

from __future__ import annotations

from pathlib import Path

import click

from trustlab.cli.common import out_option, seed_option

MODES = ("independent", "joint", "cav", "inner_prod", "cosine")


def _read_images(paths: tuple[Path, ...]):
    """Grey 28x28 arrays in [0, 1] (Fashion-MNIST's form), one per file."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(np.asarray(im.convert("L").resize((28, 28), Image.BILINEAR), dtype=np.float32) / 255.0)
        except (UnidentifiedImageError, OSError) as exc:
            raise click.BadParameter(f"{p} is not an image PIL can read ({exc})", param_hint="IMAGES") from exc
    return np.stack(out)


@click.command()
@click.argument("images", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--model", "model_spec", default="embedded:efficientnet-lite0", show_default=True,
              help="embedded:efficientnet-lite0 | embedded:dinov2-s (the frozen backbone)")
@seed_option
@out_option("runs/concepts")
@click.option("--mode", type=click.Choice(MODES), default="independent", show_default=True,
              help="CG form (independent, joint) or an ablation; 'cav' here is CG's cav normalisation")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="also give the CAV baseline")
@click.option("--target", type=click.IntRange(0, 9), default=None,
              help="Fashion-MNIST class index to explain (default: each image's predicted class)")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="concepts to print per image")
@click.option("--concept-model", "concept_model", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="file of trained concept models to load, or to write after training (default: the trustlab cache)")
@click.option("--train-images", type=click.IntRange(min=10), default=2000, show_default=True,
              help="Fashion-MNIST images the heads are trained on (when no saved models match)")
def concepts(images: tuple[Path, ...], model_spec: str, seed: int, out: Path, mode: str, baseline: bool,
             target: int | None, top: int, concept_model: Path | None, train_images: int) -> None:
    """Print which concepts drive the prediction for each of IMAGES, by Concept Gradient.

    The backbone is frozen; a Fashion-MNIST classifier head (the explained model f) and a concept head g
    (14 garment attributes + 7 pixel concepts) are trained on its features once and saved (--concept-model).
    Images are read as Fashion-MNIST is: grey, 28x28, light garment on a dark background. Attributions are
    of the target class's logit (positive: more of the concept raises the class score).

    Writes the run folder OUT (config.json, samples.jsonl, results.json, report.html); a rerun starts over.
    """
    import torch
    from rich.console import Console
    from rich.table import Table

    from trustlab.errors import ModelSpecError
    from trustlab.explain import ConceptGradient, global_scores
    from trustlab.explain.concept_data import FASHION_CLASSES
    from trustlab.explain.vision_concepts import concept_models, encode, load_backbone
    from trustlab.report import RunFolder, Section

    if not images:
        raise click.UsageError("give at least one image file, e.g. trustlab concepts shoe.png")
    try:
        backbone = load_backbone(model_spec)
    except ModelSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    pixels = _read_images(images)
    models = concept_models(backbone, n_train=train_images, seed=seed, path=concept_model)
    names = models["names"]
    z = encode(backbone, pixels)
    with torch.no_grad():
        logits = models["f"](z)
        concept_prob = torch.sigmoid(models["g"](z))
    predicted = logits.argmax(1)
    tgt = predicted if target is None else torch.full_like(predicted, target)
    scores = ConceptGradient(models["f"], models["g"], mode=mode).attribute(z, target=tgt)
    cav = models["cav"].attribute(z, target=tgt) if baseline else None
    run = RunFolder(out, {"command": "concepts", "model": model_spec, "layer": backbone.layer, "images": [str(p) for p in images],
                          "mode": mode, "target": target, "seed": seed, "concept_model": str(models["path"]),
                          "train_images": train_images, "baseline": baseline}, fresh=True)
    console, sections = Console(), []
    for i, path in enumerate(images):
        order = scores[i].argsort(descending=True).tolist()
        row = {"id": str(path), "predicted": FASHION_CLASSES[int(predicted[i])], "target": FASHION_CLASSES[int(tgt[i])],
               "attributions": dict(zip(names, scores[i].tolist())),
               "concept_probability": dict(zip(names, concept_prob[i].tolist())),
               "top": [names[j] for j in order[:top]]}
        if cav is not None:
            row["cav"] = dict(zip(names, cav[i].tolist()))
            row["cav_top"] = [names[j] for j in cav[i].argsort(descending=True).tolist()[:top]]
        run.add_sample(row)
        table = Table(title=f"{path.name}: predicted {row['predicted']}, explaining {row['target']}")
        for col in ("concept", f"CG ({mode})", "P(concept)", *(("CAV",) if cav is not None else ())):
            table.add_column(col)
        rows = [{"concept": names[j], "CG": round(float(scores[i, j]), 4),
                 "P(concept)": round(float(concept_prob[i, j]), 3),
                 **({"CAV": round(float(cav[i, j]), 4)} if cav is not None else {})} for j in order[:top]]
        for r in rows:
            table.add_row(*(str(v) for v in r.values()))
        console.print(table)
        sections.append(Section(path.name, f"Predicted {row['predicted']}; attributions of the {row['target']} "
                                f"logit, top {top} concepts.", rows))
    run.write_results({"global_signed_avg": dict(zip(names, global_scores(scores).tolist())),
                       "global_avg": dict(zip(names, global_scores(scores, "avg").tolist())),
                       "predicted": [FASHION_CLASSES[int(p)] for p in predicted], "concept_model": str(models["path"])})
    click.echo(f"report: {run.write_report('trustlab concepts (Concept Gradient)', sections)}")
