"""ResNet-20 training images/s: the package's CLI path vs a PyTorch reference.

For each Keras backend of `--backends`, each batch size of `--batch-sizes`
and each precision of `--precisions`, trains the CIFAR ResNet-20 the way
`keras-lrphase train` does (`run_training` with a `RunConfig`: the `device`
pipeline on JAX and torch and the `numpy` one on TensorFlow, or those of
`--pipelines`; normalisation, 4-pixel crops and flips, momentum SGD with L2
weight decay, `step` schedule, no Hessian) on random 32x32x3 images for
`--epochs` epochs of `--images` images, and takes the summary's
`images_per_second` (the epochs after the first). Each backend runs in its
own subprocess with `KERAS_BACKEND` set.

Next to it, a hand-written PyTorch loop trains the same network (option-A
shortcuts, BatchNorm after every convolution, widths 16/32/64, weight decay
on the convolution and dense kernels only) at the same batch and precision
on the same device: channels-last, `torch.compile` (unless
`--no-compile`), `torch.autocast` to bfloat16 for bf16, the images resident
on the device and cropped and flipped there by tensor ops, SGD momentum 0.9;
it times as many steps as the package's steady epochs hold, after one
epoch of warm-up.

Prints a markdown table and one line of JSON: per (backend, batch,
precision) both images/s, their ratio (package / reference), and
`table2_row_minutes`, the minutes one row of the paper's Table 2 would
take at the package's speed (300 epochs x 50,000 images / images/s; the
real rows also estimate the Hessian every epoch and accumulate 8 x 1024
at batch 8192, see `--accumulate`).

On a CPU (small setting; TensorFlow, JAX and torch backends):

    python benchmarks/accelerator_throughput.py --batch-sizes 128 \
        --precisions fp32 --images 1024 --epochs 2 [--no-compile]

On the GPU machine (JAX and PyTorch, no TensorFlow; Keras from the wheels
of `scripts/accelerator_table2.sh`, installed to /tmp/site as it does):

    PYTHONPATH=/tmp/site python3 benchmarks/accelerator_throughput.py \
        --backends jax,torch [--batch-sizes 128,8192] [--precisions fp32,bf16]
        [--images 16384] [--epochs 3] [--device auto]
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("fp32", "bf16")
PIPELINES = ("auto", "numpy", "device")
TABLE2_EPOCHS = 300
TABLE2_IMAGES = 50_000
TEST_IMAGES = 256
WEIGHT_DECAY = 1e-4
LEARNING_RATE = 0.1
MOMENTUM = 0.9


# --------------------------------------------------------------------------
# Command line


def _list(kind, choices=None):
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty list: {text!r}")
        out = []
        for item in items:
            if kind is int:
                try:
                    value = int(item)
                except ValueError:
                    raise argparse.ArgumentTypeError(
                        f"{item!r} is not an integer") from None
                if value < 1:
                    raise argparse.ArgumentTypeError(
                        f"{value} must be a positive integer")
            else:
                value = item
                if choices is not None and value not in choices:
                    raise argparse.ArgumentTypeError(
                        f"{value!r} is not one of {', '.join(choices)}")
            if value not in out:
                out.append(value)
        return out

    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", type=_list(str, BACKENDS),
                        default=list(BACKENDS),
                        help="Keras backends, comma-separated "
                             "(default: tensorflow,jax,torch)")
    parser.add_argument("--batch-sizes", type=_list(int), default=[128, 8192],
                        help="comma-separated (default: 128,8192)")
    parser.add_argument("--precisions", type=_list(str, PRECISIONS),
                        default=list(PRECISIONS),
                        help="fp32 and/or bf16 (default: fp32,bf16)")
    parser.add_argument("--pipelines", type=_list(str, PIPELINES),
                        default=["auto"],
                        help="the package's input pipelines, comma-separated "
                             "(auto: device on JAX and torch, numpy on "
                             "TensorFlow; default: auto)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs per run; the first is warm-up "
                             "(default: 3)")
    parser.add_argument("--images", type=int, default=16384,
                        help="random training images (one epoch), at least "
                             "2 of the largest batch (default: 16384)")
    parser.add_argument("--accumulate", type=int, default=1,
                        help="the package's sub-batches per step "
                             "(Table 2's batch 8192 rows use 8; default: 1)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"),
                        default="auto",
                        help="auto: cuda when PyTorch sees a GPU, else cpu")
    parser.add_argument("--no-compile", action="store_true",
                        help="run the PyTorch reference without torch.compile")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds allowed to each subprocess")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check "
                             "that the script still runs (its numbers mean "
                             "nothing): the backend of KERAS_BACKEND, batch "
                             "16, 64 images, 2 epochs, eager reference, CPU")
    parser.add_argument("--worker", choices=("keras", "reference"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    if args.smoke:
        vars(args).update(
            backends=[os.environ.get("KERAS_BACKEND", "tensorflow")],
            batch_sizes=[16], precisions=["fp32"], pipelines=["auto"],
            images=64, epochs=2, accumulate=1, no_compile=True, device="cpu")
    if args.epochs < 2:
        parser.error(f"argument --epochs: {args.epochs} must be at least 2 "
                     "(the first epoch is warm-up)")
    if args.accumulate < 1:
        parser.error(f"argument --accumulate: {args.accumulate} must be >= 1")
    for batch in args.batch_sizes:
        if batch % args.accumulate:
            parser.error(f"argument --batch-sizes: {batch} is not divisible "
                         f"by --accumulate {args.accumulate}")
    largest = max(args.batch_sizes)
    if args.images < 2 * largest:
        parser.error(f"argument --images: {args.images} must be at least 2 "
                     f"batches of the largest batch size ({2 * largest})")
    if "device" in args.pipelines and "tensorflow" in args.backends:
        parser.error("argument --pipelines: 'device' runs on the jax and "
                     "torch backends only; drop tensorflow from --backends")
    needed = {"torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
    for backend in args.backends:
        if importlib.util.find_spec(needed[backend]) is None:
            parser.error(f"argument --backends: {backend!r} needs the "
                         f"{needed[backend]} package, which is not installed")
    if importlib.util.find_spec("torch") is None:
        parser.error("the PyTorch reference needs torch, which is not "
                     "installed")
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# --------------------------------------------------------------------------
# Data shared by both sides


def _random_images(n, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, n).astype("int32"))


# --------------------------------------------------------------------------
# The package (one Keras backend per process)


def keras_worker(args):
    """Trains through `run_training`; returns the summary's images/s."""
    sys.path.insert(0, ROOT)
    import keras

    from keras_lrphase.data.image_data import ImageData
    from keras_lrphase.training.run_config import RunConfig
    from keras_lrphase.training.runner import run_training

    x, y = _random_images(args.images + TEST_IMAGES, seed=0)
    data = ImageData(
        name="cifar10", x_train=x[:args.images], y_train=y[:args.images],
        x_test=x[args.images:], y_test=y[args.images:],
        class_names=tuple(str(i) for i in range(10)), augment="crop-flip",
        source="random")
    config = RunConfig(
        dataset="cifar10", model="resnet20", batch_size=args.batch_size,
        epochs=args.epochs, lr=LEARNING_RATE, momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY, schedule="step", hessian_every=0,
        accumulate=args.accumulate, augment="auto", pipeline=args.pipeline,
        precision=args.precision, eval_batch_size=TEST_IMAGES,
        name="accelerator-throughput")
    with tempfile.TemporaryDirectory() as out:
        summary = run_training(config, out, verbose=0, log=None, data=data)
    return {
        "images_per_second": summary["images_per_second"],
        "steps_per_epoch": summary["steps_per_epoch"],
        "backend": keras.backend.backend(),
        "pipeline": summary["config"]["pipeline"],
        "keras_device": _keras_device(keras.backend.backend()),
    }


def _keras_device(backend):
    if backend == "jax":
        import jax

        return str(jax.devices()[0].platform)
    if backend == "torch":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


# --------------------------------------------------------------------------
# The PyTorch reference


def _torch_resnet20(nn, functional):
    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            y = functional.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            if self.stride != 1 or self.extra:  # option A: subsample + pad
                x = x[:, :, ::self.stride, ::self.stride]
                low = self.extra // 2
                x = functional.pad(x, (0, 0, 0, 0, low, self.extra - low))
            return functional.relu(x + y)

    class ResNet20(nn.Module):
        def __init__(self, num_classes=10, blocks=3):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16, eps=1e-5, momentum=0.1)
            layers, cin = [], 16
            for stage, cout in enumerate((16, 32, 64)):
                for block in range(blocks):
                    stride = 2 if stage > 0 and block == 0 else 1
                    layers.append(Block(cin, cout, stride))
                    cin = cout
            self.blocks = nn.Sequential(*layers)
            self.fc = nn.Linear(64, num_classes)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

        def forward(self, x):
            x = functional.relu(self.bn(self.conv(x)))
            x = self.blocks(x)
            return self.fc(x.mean((2, 3)))

    return ResNet20()


def reference_worker(args):
    """A hand-written PyTorch training loop; returns its images/s."""
    import torch
    from torch import nn
    from torch.nn import functional

    device = torch.device(args.device)
    torch.manual_seed(0)
    steps = args.images // args.batch_size
    x, y = _random_images(args.images, seed=0)
    images = torch.from_numpy(x).to(device)  # NHWC uint8, on the device
    labels = torch.from_numpy(y).long().to(device)
    mean = images.float().mean((0, 1, 2))
    std = images.float().std((0, 1, 2))

    model = _torch_resnet20(nn, functional).to(device)
    model = model.to(memory_format=torch.channels_last)
    decay = [p for n, p in model.named_parameters()
             if p.ndim > 1]  # convolution and dense kernels, as the L2
    rest = [p for n, p in model.named_parameters() if p.ndim <= 1]
    extra = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": WEIGHT_DECAY},
         {"params": rest, "weight_decay": 0.0}],
        lr=LEARNING_RATE, momentum=MOMENTUM, **extra)
    net = model if args.no_compile else torch.compile(model)
    loss_fn = nn.CrossEntropyLoss()
    bf16 = args.precision == "bf16"
    arange = torch.arange(32, device=device)

    def batch(index):
        xb = (images[index].float() - mean) / std  # NHWC
        n = xb.shape[0]
        padded = functional.pad(xb, (0, 0, 4, 4, 4, 4))  # 40x40, zeros
        offsets = torch.randint(0, 9, (2, n), device=device)
        rows = (offsets[0, :, None] + arange)[:, :, None]
        cols = (offsets[1, :, None] + arange)[:, None, :]
        xb = padded[torch.arange(n, device=device)[:, None, None], rows, cols]
        flip = torch.rand(n, device=device) < 0.5
        xb = torch.where(flip[:, None, None, None], xb.flip(2), xb)
        # NHWC -> NCHW view: the channels-last layout, no copy.
        return xb.permute(0, 3, 1, 2), labels[index]

    def step(index):
        xb, yb = batch(index)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def epoch(count):
        order = torch.randperm(args.images, device=device)
        for i in range(count):
            loss = step(order[i * args.batch_size:(i + 1) * args.batch_size])
        return loss

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.train()
    epoch(steps)  # warm-up: compiles and tunes
    sync()
    timed = (args.epochs - 1) * steps
    start = time.perf_counter()
    for _ in range(args.epochs - 1):
        loss = epoch(steps)
    sync()
    seconds = time.perf_counter() - start
    if not torch.isfinite(loss):
        raise RuntimeError("the reference loop diverged")
    return {
        "images_per_second": round(timed * args.batch_size / seconds, 1),
        "timed_steps": timed,
        "compiled": not args.no_compile,
        "torch": torch.__version__,
        "device_name": (torch.cuda.get_device_name(device)
                        if device.type == "cuda" else "cpu"),
    }


# --------------------------------------------------------------------------
# The driver


def pipeline_for(backend, pipeline):
    """The pipeline `auto` stands for on `backend`."""
    if pipeline != "auto":
        return pipeline
    return "numpy" if backend == "tensorflow" else "device"


def _run(worker, args, batch, precision, backend=None, pipeline="numpy"):
    command = [sys.executable, os.path.abspath(__file__), "--worker", worker,
               "--pipeline", pipeline,
               "--batch-size", str(batch), "--precision", precision,
               "--epochs", str(args.epochs), "--images", str(args.images),
               "--accumulate", str(args.accumulate), "--device", args.device]
    if args.no_compile:
        command.append("--no-compile")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    if backend is not None:
        env["KERAS_BACKEND"] = backend
        if args.device == "cpu":  # keep every backend off a GPU
            env["CUDA_VISIBLE_DEVICES"] = ""
            env["JAX_PLATFORMS"] = "cpu"
    label = (f"{backend} ({pipeline} pipeline)" if backend else "reference")
    label += f" batch {batch} {precision}"
    print(f"# {label} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=args.timeout)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{label} failed (exit status {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"# {label}: {result['images_per_second']} images/s "
          f"({time.perf_counter() - start:.0f} s)", file=sys.stderr,
          flush=True)
    return result


def _cell(pkg, ref, backend, batch, precision):
    ips, ref_ips = pkg["images_per_second"], ref["images_per_second"]
    return {
        "backend": backend, "pipeline": pkg["pipeline"],
        "batch_size": batch, "precision": precision,
        "keras_device": pkg["keras_device"],
        "package_images_per_second": ips,
        "reference_images_per_second": ref_ips,
        "ratio": ips / ref_ips,
        "table2_row_minutes": table2_minutes(ips),
        "steps_per_epoch": pkg["steps_per_epoch"],
    }


def table2_minutes(images_per_second):
    """Minutes of one Table 2 row (300 epochs of 50,000 images)."""
    return TABLE2_EPOCHS * TABLE2_IMAGES / images_per_second / 60


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        work = keras_worker if args.worker == "keras" else reference_worker
        print(json.dumps(work(args)))
        return None
    started = time.perf_counter()
    references = {}
    cells = []
    for batch in args.batch_sizes:
        for precision in args.precisions:
            ref = _run("reference", args, batch, precision)
            references[(batch, precision)] = ref
            for backend in args.backends:
                pipelines = dict.fromkeys(
                    pipeline_for(backend, p) for p in args.pipelines)
                for pipeline in pipelines:
                    cells.append(_cell(
                        _run("keras", args, batch, precision, backend,
                             pipeline), ref, backend, batch, precision))
    cells.sort(key=lambda c: (args.backends.index(c["backend"]),
                              c["batch_size"], c["precision"], c["pipeline"]))
    any_ref = next(iter(references.values()))
    result = {
        "device": args.device,
        "device_name": any_ref["device_name"],
        "torch": any_ref["torch"],
        "torch_compile": not args.no_compile,
        "epochs": args.epochs,
        "images": args.images,
        "accumulate": args.accumulate,
        "cpu_count": os.cpu_count(),
        "cells": cells,
        "table2_row_minutes": {
            f"{c['backend']} {c['pipeline']} {c['precision']} batch "
            f"{c['batch_size']}":
                c["table2_row_minutes"] for c in cells},
        "seconds": round(time.perf_counter() - started, 1),
    }
    compiled = "torch.compile" if not args.no_compile else "eager"
    print(f"ResNet-20 training on {args.device} ({result['device_name']}), "
          f"{args.images} random images/epoch, {args.epochs} epochs "
          f"(first = warm-up); reference: PyTorch {result['torch']}, "
          f"{compiled}, channels-last\n")
    print("| backend | pipeline | batch | precision | package img/s "
          "| reference img/s | ratio | Table 2 row (min) |")
    print("|---|---|---:|---|---:|---:|---:|---:|")
    for c in cells:
        print(f"| {c['backend']} | {c['pipeline']} | {c['batch_size']} "
              f"| {c['precision']} "
              f"| {c['package_images_per_second']:,.1f} "
              f"| {c['reference_images_per_second']:,.1f} "
              f"| {c['ratio']:.2f} | {c['table2_row_minutes']:,.1f} |")
    print()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
