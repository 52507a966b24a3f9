"""Training benchmark: images/s of one training step per model and input size on this device,
and seconds per epoch of the shipped recipes.

    python benchmarks/bench_train.py steps [--models seed_cnn resnet18] [--sizes 128 180 224] [--batch 32]
    python benchmarks/bench_train.py recipes [--configs seed cpu default] [--epochs 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from common import DATA, table

from pneumo.config import AugmentConfig, load_config
from pneumo.data.augment import augment_batch
from pneumo.data.preprocess import normalise
from pneumo.models import create_model, model_spec
from pneumo.training.cuda_graphs import cuda_graphed
from pneumo.training.loop import train
from pneumo.training.optim import pick_device


def step_throughput(name: str, size: int, batch: int, steps: int, device: torch.device, graphs: bool) -> float:
    """Images/s of augment + forward + backward + optimizer step on a resident uint8 batch, as training does."""
    spec = model_spec(name)
    net = create_model(name, num_outputs=1, image_size=size).to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=device.type == "cuda")
    step_net = cuda_graphed(net, (batch, 1, size, size), use_amp=True) if graphs else net
    images = torch.randint(0, 256, (batch, size, size), dtype=torch.uint8, device=device)
    target = torch.randint(0, 2, (batch,), device=device).float()
    aug = AugmentConfig(rotate_deg=10, scale=0.1, translate=0.05, brightness=0.1, contrast=0.2, gamma=0.2, noise=0.02)
    rng = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        x = normalise(augment_batch(images.unsqueeze(1).float() / 255, aug, rng), spec.mean, spec.std)
        x = x.contiguous(memory_format=torch.channels_last)  # as training does
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda", cache_enabled=False):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(step_net(x)[:, 0].float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    steps = sub.add_parser("steps")
    steps.add_argument("--models", nargs="+", default=["seed_cnn", "resnet18"])
    steps.add_argument("--sizes", type=int, nargs="+", default=[128, 180, 224])
    steps.add_argument("--batch", type=int, default=32)
    steps.add_argument("--steps", type=int, default=10)
    recipes = sub.add_parser("recipes")
    recipes.add_argument("--configs", nargs="+", default=["seed", "cpu"])
    recipes.add_argument("--epochs", type=int, default=1, help="epochs to run; the total is projected from them")
    args = parser.parse_args()
    device = pick_device("auto")

    if args.what == "steps":
        modes = [False, True] if device.type == "cuda" else [False]
        rows = [
            (name, size, args.batch, device.type, "CUDA graphs" if graphs else "eager", round(step_throughput(name, size, args.batch, args.steps, device, graphs), 1))
            for name in args.models
            for size in args.sizes
            for graphs in modes
        ]
        columns = ["model", "size", "batch", "device", "forward + backward", "images/s"]
        print(table("Training step throughput (augment + forward + backward + AdamW)", columns, rows))
        return

    rows = []
    for name in args.configs:
        cfg = load_config(name, [f"data={DATA}", f"epochs={args.epochs}"])
        full = load_config(name).epochs
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = train(cfg, f"{out}/run", progress=False, log=lambda _: None, n_boot=200)
            wall = time.perf_counter() - start
        per_epoch = sum(r["seconds"] for r in result.history) / len(result.history)
        projected = wall - per_epoch * args.epochs + per_epoch * full
        rows.append((name, cfg.model, cfg.image_size, device.type, round(per_epoch, 1), args.epochs, round(wall, 1), full, round(projected)))
    print(table(
        "Recipes: seconds per epoch, measured; whole run projected to the recipe's epochs (data load from a warm cache included)",
        ["config", "model", "size", "device", "s/epoch", "epochs run", "wall s", "recipe epochs", "projected run s"],
        rows,
    ))


if __name__ == "__main__":
    main()
