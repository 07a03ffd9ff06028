"""An attribute-conditioned model's edits (trained with --condition-on): the same code z, decoded with other
attribute values; --set NAME=VALUE as one edit, or each attribute flipped in turn.

Measured: the reconstruction's pixel error beside that of a random code with the same attributes; per edit, the
pixel change, and whether D's evidence of each changed attribute (its projection term) moved toward the new
value. D trained with G is no independent judge; it is the model's own reading of the attribute.
"""
import time

import torch

from ....models import build_models
from ...checkpoint import load_checkpoint
from ...config import TrainConfig
from ...data import attribute_vectors
from ...sampling import requested_attributes
from .encoder import decode, encode, pick_encoder
from .inputs import check_images, model_split, read_images
from .outputs import GRID_FILE, write_edit

MAX_FLIP_EDITS = 8  # without --set: each of the first attributes flipped in turn, one grid column each


def load_critic(ckpt_path, G, device):
    """The checkpoint's D, in eval mode: its projection reads D's evidence of each attribute in an image."""
    state = load_checkpoint(ckpt_path)
    cfg = TrainConfig.from_dict(state["config"])
    _, D = build_models(cfg.model, G.data_shape, cfg.z_dim, 0, cfg.width, impl="ref", spectral_norm=cfg.spectral_norm,
                        d_batch_norm=cfg.penalty == "none" and not cfg.spectral_norm, backbone=cfg.vae_backbone,
                        attribute_names=G.attribute_names)
    D.load_state_dict(state["D"])
    return D.to(device).eval().requires_grad_(False)


@torch.no_grad()
def attribute_evidence(D, images, batch_size=500):
    """(N, K): D's projection term per attribute, <w_k, h(x)>; D's score of x with attributes a adds sum_k a_k of
    these, so a larger value is D reading more of attribute k in x."""
    device = next(D.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        probe = torch.zeros(len(x), len(D.attribute_names), device=device)
        _, h = D.scores_and_features(x, probe)
        out.append((h.float() @ D.label_embed.weight.float().t()).cpu())
    return torch.cat(out)


def attribute_edits(names, attributes, settings):
    """[(title, edited attribute vectors)]: the --set settings as one edit, else each attribute flipped."""
    if settings:
        edited = attributes.clone()
        for name, value in settings.items():
            edited[:, names.index(name)] = value
        return [(", ".join(f"{k}={v:g}" for k, v in settings.items()), edited)]
    edits = []
    for k, name in enumerate(names[:MAX_FLIP_EDITS]):
        edited = attributes.clone()
        edited[:, k] = -edited[:, k]
        edits.append((f"{name} flipped", edited))
    return edits


def attribute_edit_inputs(G, cfg, input_path, split, count, seed):
    """(images, their attribute vectors, where from, whether the attributes are assumed): the dataset's own rows,
    or for --input images the commonest value of each attribute in the model's bank."""
    if input_path is not None:
        images, _ = read_images(input_path)
        bank = requested_attributes(G, 4096, seed=seed)
        attributes = torch.where(bank.mean(0) > 0, 1.0, -1.0).expand(len(images), -1).clone()
        return images, attributes, str(input_path), True
    data = model_split(cfg, split)
    images, attributes = data.images[:count], attribute_vectors(data, G.attribute_names)[:count]
    return images, attributes, f"{cfg.dataset} {split} split", False


def edit_figures(D, names, title, attributes, edited, recon, decoded, evidence_recon):
    """One edit's figures: the images it changes, the pixel change from the reconstruction, and per changed
    attribute how often D's evidence of it moved toward the new value."""
    moved = attribute_evidence(D, decoded) - evidence_recon
    changed = edited != attributes  # (N, K): the attributes this edit changes, image by image
    toward = torch.sign(edited - attributes)
    per_attribute = {}
    for k, name in enumerate(names):
        rows_k = changed[:, k]
        if rows_k.any():
            per_attribute[name] = {"images_changed": int(rows_k.sum()),
                                   "critic_evidence_moved_toward_new_value":
                                       float((moved[rows_k, k] * toward[rows_k, k] > 0).float().mean())}
    return {"edit": title, "images_changed": int(changed.any(dim=1).sum()),
            "mean_abs_pixel_change": float((decoded - recon).abs().mean()), "per_attribute": per_attribute}


def run_attribute_edit(ckpt_path, G, cfg, out_dir, settings=None, input_path=None, split="test", count=500,
                       encoder="auto", steps=10, rows=8, use_ema=True, seed=0, device="cpu", progress=True,
                       lr=0.05, prior_weight=0.05):
    """Encode real images with their attributes (attribute_edit_inputs), decode the codes with edited attributes,
    measure, and write edit_grid.png (original | reconstruction | each edit) and edit.json into ``out_dir``."""
    names = G.attribute_names
    requested_attributes(G, 1, settings, checkpoint=ckpt_path)  # unknown names fail here, before any work
    images, attributes, source, assumed = attribute_edit_inputs(G, cfg, input_path, split, count, seed)
    check_images(images, G.data_shape, source)
    enc, enc_info, _ = pick_encoder(G, ckpt_path, encoder, device, use_ema)
    started = time.perf_counter()
    z = encode(G, images, attributes, enc, steps, lr, 0.0, prior_weight, None, seed=seed, progress=progress)
    encode_seconds = time.perf_counter() - started
    recon = decode(G, z, attributes.to(device)).cpu()
    random_codes = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed + 1)).to(device)
    random_recon = decode(G, random_codes, attributes.to(device)).cpu()
    D = load_critic(ckpt_path, G, device)
    evidence_recon = attribute_evidence(D, recon)
    mse = (recon - images).pow(2).flatten(1).mean(1)
    report = {"checkpoint": str(ckpt_path), "inputs": source, "images": len(images), "attributes": list(names),
              "attributes_of_inputs": "assumed: the commonest value of each in the model's bank" if assumed
              else "the dataset's own", "encoder_training": enc_info, "refine_steps": steps,
              "encode_seconds": encode_seconds, "torch": torch.__version__,
              "reconstruction": {"pixel_mse": float(mse.mean()), "pixel_mse_median": float(mse.median()),
                                 "pixel_mse_random_code_same_attributes":
                                     float((random_recon - images).pow(2).flatten(1).mean(1).mean())},
              "edits": []}
    columns, edited_images = ["original", "reconstruction"], []
    for title, edited in attribute_edits(names, attributes, settings):
        decoded = decode(G, z, edited.to(device)).cpu()
        edited_images.append(decoded)
        report["edits"].append(edit_figures(D, names, title, attributes, edited, recon, decoded, evidence_recon))
        columns.append(title)
    shown = min(rows, len(images))
    tiles = torch.cat([torch.stack([images[i], recon[i], *(e[i] for e in edited_images)]) for i in range(shown)])
    report.update({"grid": GRID_FILE, "grid_columns": columns})
    return write_edit(out_dir, tiles, len(columns), report)
