"""Training benchmark: images/s of one training step per model and input size on this device,
seconds per epoch of the shipped recipes, and the seed recipe against the notebook's own Keras pipeline.

    python benchmarks/bench_train.py steps [--models seed_cnn resnet18] [--sizes 128 180 224] [--batch 32]
    python benchmarks/bench_train.py recipes [--configs seed cpu default] [--epochs 1]
    python benchmarks/bench_train.py keras [--keras-python PATH] [--rounds 2]

`keras` runs `keras_reference.py` (the notebook's tf.data + Keras training, TensorFlow from
`--keras-python`, default $PNEUMO_KERAS_PYTHON or this Python) and pneumo's seed-recipe step,
alternately, and prints the best of each with their ratio. Without TensorFlow it says how to
install it and prints pneumo's figures alone. Run with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DATA, table

from pneumo.config import Config, load_config
from pneumo.data.augment import augment_batch
from pneumo.data.preprocess import normalise
from pneumo.models import create_model, model_spec
from pneumo.training.cuda_graphs import cuda_graphed
from pneumo.training.loop import train
from pneumo.training.optim import bf16_autocast_helps, make_optimizer, pick_device


def step_throughput(cfg: Config, steps: int, device: torch.device, graphs: bool = False) -> float:
    """Images/s of augment + forward + backward + optimizer step on a resident uint8 batch, as
    training does it for this config (its optimiser, augmentation and precision)."""
    spec, size, batch = model_spec(cfg.model), cfg.image_size, cfg.batch_size
    net = create_model(cfg.model, num_outputs=1, image_size=size).to(device, memory_format=torch.channels_last)
    opt = make_optimizer(cfg, net)
    use_amp = cfg.amp and bf16_autocast_helps(device)
    step_net = cuda_graphed(net, (batch, 1, size, size), use_amp=use_amp) if graphs else net
    images = torch.randint(0, 256, (batch, size, size), dtype=torch.uint8, device=device)
    target = torch.randint(0, 2, (batch,), device=device).float()
    rng = torch.Generator(device=device).manual_seed(0)

    def step() -> None:
        x = normalise(augment_batch(images.unsqueeze(1).float() / 255, cfg.augment, rng), spec.mean, spec.std)
        x = x.contiguous(memory_format=torch.channels_last)  # as training does
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp, cache_enabled=False):
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


def keras_throughput(python: str, steps: int, cache: bool = False) -> tuple[float, str] | str:
    """(images/s, TensorFlow version) of the notebook's pipeline under `python`, or why it could not run."""
    script = Path(__file__).with_name("keras_reference.py")
    command = [python, str(script), "--data", str(DATA), "--steps", str(steps), *(["--cache"] if cache else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} did not run: {exc}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{python} could not run it ({last})"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["images_per_s"], result["tensorflow"]


def keras_table(python: str, rounds: int, steps: int, device: torch.device) -> str:
    """The seed recipe's training step, pneumo against the notebook's Keras pipeline, alternately."""
    seed = load_config("seed")
    fp32 = load_config("seed", ["amp=false"])
    best = {"keras": 0.0, "keras cached": 0.0, "pneumo": 0.0, "pneumo fp32": 0.0}
    why, tf_version = "", ""
    for _ in range(rounds):
        for name, cache in (("keras", False), ("keras cached", True)):
            keras = keras_throughput(python, steps, cache) if not why else why
            if isinstance(keras, str):
                why = keras
            else:
                best[name], tf_version = max(best[name], keras[0]), keras[1]
        best["pneumo"] = max(best["pneumo"], step_throughput(seed, steps, device))
        best["pneumo fp32"] = max(best["pneumo fp32"], step_throughput(fp32, steps, device))
    precision = "bf16 autocast" if seed.amp and bf16_autocast_helps(device) else "fp32"
    rows = [
        ["pneumo, seed.yaml (decoded once, channels-last, fused Adam)", precision, round(best["pneumo"], 1)],
        ["pneumo, seed.yaml with amp=false", "fp32", round(best["pneumo fp32"], 1)],
    ]
    title = f"Seed recipe training step (seed_cnn, 180 px, batch 16), best of {rounds}"
    if why:
        note = (
            f"\nKeras reference skipped: {why}. Install TensorFlow in its own environment "
            "(python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu) and pass --keras-python /tmp/tf/bin/python.\n"
        )
        return table(title, ["pipeline", "precision", "images/s"], rows) + note
    rows += [
        [f"the notebook's Keras pipeline (TensorFlow {tf_version}), decoding JPEGs every step", "fp32", round(best["keras"], 1)],
        ["the same, from its in-memory cache (the notebook's later epochs)", "fp32", round(best["keras cached"], 1)],
    ]
    for row in rows:
        row += [f"{row[2] / best['keras']:.2f}x", f"{row[2] / best['keras cached']:.2f}x"]
    return table(
        title + ", against Keras on the same cores", ["pipeline", "precision", "images/s", "vs Keras decoding", "vs Keras cached"], rows
    )


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
    keras = sub.add_parser("keras")
    keras.add_argument("--keras-python", default=os.environ.get("PNEUMO_KERAS_PYTHON", sys.executable), help="a Python with TensorFlow")
    keras.add_argument("--rounds", type=int, default=2, help="alternations of the two pipelines; the best of each is kept")
    keras.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    device = pick_device("auto")

    if args.what == "keras":
        print(keras_table(args.keras_python, args.rounds, args.steps, device))
        return
    if args.what == "steps":
        modes = [False, True] if device.type == "cuda" else [False]
        rows = []
        for name in args.models:
            for size in args.sizes:
                cfg = load_config(
                    "cpu", [f"model={name}", f"image_size={size}", f"batch_size={args.batch}"]
                )  # AdamW and the CPU recipe's augmentation
                precision = "bf16 autocast" if cfg.amp and bf16_autocast_helps(device) else "fp32"
                for graphs in modes:
                    ips = step_throughput(cfg, args.steps, device, graphs)
                    rows.append((name, size, args.batch, device.type, precision, "CUDA graphs" if graphs else "eager", round(ips, 1)))
        columns = ["model", "size", "batch", "device", "precision", "forward + backward", "images/s"]
        print(table("Training step throughput (augment + forward + backward + AdamW)", columns, rows))
        return

    rows = []
    for name in args.configs:
        cfg = load_config(name, [f"data={DATA}", f"epochs={args.epochs}"])
        full = load_config(name).epochs
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = train(cfg, out=f"{out}/run", progress=False, log=lambda _: None, n_boot=200)
            wall = time.perf_counter() - start
        per_epoch = sum(r["seconds"] for r in result.history) / len(result.history)
        projected = wall - per_epoch * args.epochs + per_epoch * full
        rows.append(
            (name, cfg.model, cfg.image_size, device.type, round(per_epoch, 1), args.epochs, round(wall, 1), full, round(projected))
        )
    print(
        table(
            "Recipes: seconds per epoch, measured; whole run projected to the recipe's epochs (data load from a warm cache included)",
            ["config", "model", "size", "device", "s/epoch", "epochs run", "wall s", "recipe epochs", "projected run s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
