"""A class-conditional model's edits, and what they keep: each real image is encoded, then decoded with every class
(the same handwriting as another digit) and moved along the directions in which stroke thickness and slant grow.

Measured (the edit study): reconstruction error, the style kept across classes beside what random codes keep,
how monotonically each handwriting sweep moves its measure and, where the digit classifier can read the classes,
the class kept by the reconstruction and the success of each class edit.
"""
import time
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ...metrics.classifier import DIGIT_DATASETS, predict_classes
from .digit_measures import DIGIT_MEASURES
from .encoder import decode, encode, feature_model, pick_encoder
from .inputs import EditError, check_images, edit_inputs
from .outputs import GRID_FILE, write_edit


@torch.no_grad()
def handwriting_directions(G, num_classes, n=4000, seed=0, batch_size=500):
    """For each handwriting measure: a unit direction in z along which it grows, by least squares of the measure
    (taken on n samples of G) on z with one intercept per class. Also the fit's R^2 and the measure's change per
    unit step along the direction."""
    device = next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)
    labels = torch.arange(n) % num_classes
    images = decode(G, z.to(device), labels.to(device), batch_size).cpu()
    design = torch.cat([z, F.one_hot(labels, num_classes).float()], dim=1).double()
    result = {}
    for name, measure in DIGIT_MEASURES.items():
        target = measure(images).double()
        coef = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
        residual = target - design @ coef
        class_means = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, labels, target) / torch.bincount(
            labels, minlength=num_classes)
        within = target - class_means[labels]  # R^2 of z beyond what the class explains
        weights = coef[:G.z_dim].float()
        result[name] = {"direction": F.normalize(weights, dim=0),
                        "per_unit": float(weights.norm()),
                        "r2_within_class": float(1 - residual.pow(2).sum() / within.pow(2).sum())}
    return result


@torch.no_grad()
def classifier_features(classifier, images, batch_size=500):
    device = next(classifier.parameters()).device
    return torch.cat([classifier.features(images[i:i + batch_size].to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


def _pearson(a, b):
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def _spearman_rows(values, order):
    """Mean over rows of the rank correlation between each row of ``values`` and ``order``."""
    ranks = values.argsort(dim=1).argsort(dim=1).double()
    target = order.argsort().argsort().double().expand_as(ranks)
    ranks, target = ranks - ranks.mean(1, keepdim=True), target - target.mean(1, keepdim=True)
    return float(((ranks * target).sum(1) / (ranks.norm(dim=1) * target.norm(dim=1)).clamp_min(1e-12)).mean())


def style_kept(originals, edited, targets, random_edits):
    """Per handwriting measure: within each target class, the correlation over images between the original's
    measure and the edited image's, averaged over target classes; beside it the same for random codes of the
    target class (what no style transfer at all gives) and the mean absolute change."""
    out = {}
    for name, measure in DIGIT_MEASURES.items():
        a_orig, a_edit, a_rand = measure(originals), measure(edited), measure(random_edits)
        corr, corr_random = [], []
        for t in targets.unique():
            rows = targets == t
            corr.append(_pearson(a_orig[rows], a_edit[rows]))
            corr_random.append(_pearson(a_orig[rows], a_rand[rows]))
        out[name] = {"correlation": float(np.mean(corr)), "correlation_random_code": float(np.mean(corr_random)),
                     "mean_abs_change": float((a_edit - a_orig).abs().mean()),
                     "mean_abs_change_random_code": float((a_rand - a_orig).abs().mean())}
    return out


def timed_encode(G, images, labels, encoder, steps, lr, feature_weight, prior_weight, classifier, seed, progress):
    """(codes, seconds the encoder and refinement took for all the images)."""
    # one image first, untimed: the first pass through the networks pays the process's one-off warm-up (about a
    # second on a CPU), which is no part of the cost per image
    encode(G, images[:1], labels[:1], encoder, min(steps, 1), lr, feature_weight, prior_weight, classifier,
           seed=seed, progress=False)
    started = time.perf_counter()
    z = encode(G, images, labels, encoder, steps, lr, feature_weight, prior_weight, classifier, seed=seed,
               progress=progress)
    return z, time.perf_counter() - started


def reconstruction_figures(images, recon, labels, classifier, seed):
    """Pixel error of the reconstructions, and their distance from the originals in classifier features beside
    the distance between two different real images of the same class, for scale."""
    pixel_mse = (recon - images).pow(2).flatten(1).mean(1)
    f_orig, f_recon = classifier_features(classifier, images), classifier_features(classifier, recon)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    same = labels[perm] == labels
    return {"pixel_mse": float(pixel_mse.mean()), "pixel_mse_median": float(pixel_mse.median()),
            "feature_distance": float((f_recon - f_orig).norm(dim=1).mean()),
            "feature_distance_real_pairs_same_class":
                float((f_orig[perm][same] - f_orig[same]).norm(dim=1).mean()) if same.any() else None}


class ClassEdits(NamedTuple):
    """Every image decoded with every class, image-major: ``images`` (n * num_classes, C, H, W) of classes
    ``targets``; ``to_other_class`` marks the rows whose class differs from the image's own, and ``random`` holds
    those rows decoded from random codes instead (what an edit that keeps nothing gives)."""
    images: torch.Tensor
    targets: torch.Tensor
    to_other_class: torch.Tensor
    random: torch.Tensor


def decode_class_edits(G, num_classes, z, labels, seed):
    """Each code decoded with every class (its own class included: that is the reconstruction)."""
    device = next(G.parameters()).device
    targets = torch.arange(num_classes).repeat(len(z))
    sources = labels.repeat_interleave(num_classes)
    z_rep = z.repeat_interleave(num_classes, dim=0)
    images = decode(G, z_rep, targets.to(device)).cpu()
    other = targets != sources
    random_codes = torch.randn(len(z_rep), G.z_dim, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    random_edits = decode(G, random_codes[other], targets[other].to(device)).cpu()
    return ClassEdits(images, targets, other, random_edits)


def classes_read(classifier, images, recon, labels, edits, num_classes):
    """What the digit classifier reads: (the reconstructions' class figures, the class edits' success)."""
    other = edits.to_other_class
    pred_orig, pred_recon = predict_classes(classifier, images), predict_classes(classifier, recon)
    hits = (predict_classes(classifier, edits.images[other]) == edits.targets[other]).float()
    reconstruction = {"class_kept": float((pred_recon == labels).float().mean()),
                      "class_agrees_with_original_prediction": float((pred_recon == pred_orig).float().mean()),
                      "classifier_accuracy_on_originals": float((pred_orig == labels).float().mean())}
    class_edit = {
        "success": float(hits.mean()), "pairs": int(other.sum()),
        "success_per_target": {int(t): float(hits[edits.targets[other] == t].mean()) for t in range(num_classes)},
        "success_random_code": float((predict_classes(classifier, edits.random) == edits.targets[other])
                                     .float().mean())}
    return reconstruction, class_edit


def handwriting_sweeps(G, z, images, labels, directions, strengths, classifier, judge):
    """Each code moved along each handwriting direction at each strength: ({measure: figures}, {measure: (images
    at the lowest strength, images at the highest)})."""
    device = next(G.parameters()).device
    strengths_t = torch.tensor(strengths, dtype=torch.float32)
    figures, extremes = {}, {}
    for name, found in directions.items():
        values, decoded = [], []
        for s in strengths:
            images_s = decode(G, z + s * found["direction"].to(device), labels.to(device)).cpu()
            decoded.append(images_s)
            values.append(DIGIT_MEASURES[name](images_s))
        values = torch.stack(values, dim=1)  # (n, strengths)
        on_originals = DIGIT_MEASURES[name](images)
        means = values.mean(0)
        entry = {"strengths": list(strengths), "mean": [float(v) for v in means],
                 "mean_is_monotonic": bool((means.diff() > 0).all()),
                 "per_image_rank_correlation": _spearman_rows(values, strengths_t),
                 "fraction_images_monotonic": float((values.diff(dim=1) > 0).all(dim=1).float().mean()),
                 "regression_r2_within_class": found["r2_within_class"],
                 "attribute_change_per_unit_strength_in_fit": found["per_unit"],
                 "on_originals_mean": float(on_originals.mean()),
                 # the whole sweep's effect, in units of how much the measure varies among the real images
                 "sweep_change_in_original_std": (float((means[-1] - means[0]) / on_originals.std().clamp_min(1e-6))
                                                  if len(images) > 1 else None)}
        if judge:
            entry["class_kept_at_extremes"] = [float((predict_classes(classifier, decoded[i]) == labels).float().mean())
                                               for i in (0, len(strengths) - 1)]
        figures[name] = entry
        extremes[name] = (decoded[0], decoded[-1])
    return figures, extremes


def edit_study(G, num_classes, images, labels, encoder=None, steps=200, strengths=(-3, -1.5, 0, 1.5, 3),
               classifier=None, judge=True, seed=0, progress=True, lr=0.05, feature_weight=0.1, prior_weight=0.05,
               direction_samples=4000):
    """Encode ``images`` of classes ``labels``, decode every class edit and handwriting edit, and measure.

    Returns (report dict, tensors for the grid). ``judge``: the classifier can read these classes (digits);
    otherwise the class-based figures are left out.
    """
    device = next(G.parameters()).device
    n = len(images)
    z, encode_seconds = timed_encode(G, images, labels, encoder, steps, lr, feature_weight, prior_weight,
                                     classifier, seed, progress)
    recon = decode(G, z, labels.to(device)).cpu()
    report = {"images": n, "encoder": encoder is not None, "refine_steps": steps, "encode_seconds": encode_seconds,
              "reconstruction": reconstruction_figures(images, recon, labels, classifier, seed)}
    edits = decode_class_edits(G, num_classes, z, labels, seed)
    other = edits.to_other_class
    report["style_kept"] = style_kept(images.repeat_interleave(num_classes, 0)[other], edits.images[other],
                                      edits.targets[other], edits.random)
    if judge:
        recon_classes, report["class_edit"] = classes_read(classifier, images, recon, labels, edits, num_classes)
        report["reconstruction"].update(recon_classes)
    directions = handwriting_directions(G, num_classes, n=direction_samples, seed=seed)
    report["attributes"], sweep_extremes = handwriting_sweeps(G, z, images, labels, directions, strengths,
                                                              classifier, judge)
    names = list(directions)
    if len(names) == 2:
        report["attribute_direction_cosine"] = float(directions[names[0]]["direction"]
                                                     @ directions[names[1]]["direction"])
    grid = {"recon": recon, "class_edits": edits.images.reshape(n, num_classes, *images.shape[1:]),
            "attributes": sweep_extremes}
    return report, grid


def edit_grid_tiles(images, grid, rows=8, max_classes=10):
    """One row per image: original | reconstruction | each class | each handwriting measure at its lowest and
    highest strength. Returns (tiles, tiles per row, column titles)."""
    rows = min(rows, len(images))
    n_classes = min(grid["class_edits"].shape[1], max_classes)
    tile_rows, titles = [], ["original", "reconstruction"]
    for i in range(rows):
        row = [images[i], grid["recon"][i], *grid["class_edits"][i, :n_classes]]
        for low, high in grid["attributes"].values():
            row += [low[i], high[i]]
        tile_rows.append(torch.stack(row))
    titles += [f"class {c}" for c in range(n_classes)]
    for name in grid["attributes"]:
        titles += [f"{name} -", f"{name} +"]
    return torch.cat(tile_rows), tile_rows[0].shape[0], titles


def run_class_edit(ckpt_path, G, cfg, num_classes, out_dir, input_path=None, label=None, split="test", count=500,
                   encoder="auto", steps=10, strengths=(-3, -1.5, 0, 1.5, 3), rows=8, use_ema=True, seed=0,
                   device="cpu", progress=True, settings=None):
    """The edit study of a class-conditional G on real images; writes edit_grid.png and edit.json into
    ``out_dir`` and returns the report."""
    if settings:
        raise EditError(f"--set edits attributes; {ckpt_path} is conditioned on classes (edit those: every class is "
                        "decoded)")
    classifier = feature_model(device)
    judge = cfg.dataset in DIGIT_DATASETS and num_classes == 10
    images, labels, source = edit_inputs(cfg, num_classes, input_path, label, split, count, classifier, judge)
    check_images(images, G.data_shape, source)
    enc, enc_info, enc_file = pick_encoder(G, ckpt_path, encoder, device, use_ema)
    report, grid = edit_study(G, num_classes, images, labels, enc, steps, strengths, classifier, judge, seed,
                              progress)
    tiles, per_row, titles = edit_grid_tiles(images, grid, rows)
    report = {"checkpoint": str(ckpt_path), "inputs": source,
              "encoder_file": str(enc_file) if enc_file is not None else None,
              "encoder_training": enc_info, "grid": GRID_FILE, "grid_columns": titles,
              "classifier_judges_classes": judge, "torch": torch.__version__, **report}
    if judge:
        rec, edit = report["reconstruction"], report["class_edit"]
        report["targets"] = {"edit_success_min": 0.9, "reconstruction_class_kept_min": 0.9,
                             "met": edit["success"] >= 0.9 and rec["class_kept"] >= 0.9}
    return write_edit(out_dir, tiles, per_row, report)
