"""Throughput of ``ctinit predict``'s batched inference against a plain ``model(pixel_values)`` loop, side by side.

    python benchmarks/predict.py [--batch 64] [--repeats 30] [--inner 5] [--json]

For each architecture a fine-tuned folder is written (``save_finetuned``) and loaded back the way ``ctinit predict``
loads it. Three rows, measured in one process, interleaved round by round (so that a shared machine's load hits
all of them alike), median over rounds, images/s:

* ``loop``: ``model(pixel_values=x)`` on a ready float batch under ``torch.inference_mode`` (the reference);
* ``predict``: :class:`ctinit.predict.Predictor` on the same images as decoded uint8 ``[B, H, W, 3]`` arrays
  (normalization, forward, softmax, top-5): what predict does per batch once the files are read;
* ``predict+files``: ``Predictor.predict_files`` on the same images as PNG files (decoding included; informative).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def measure(fn, n_images: int, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return n_images * inner / (time.perf_counter() - start)


def bench(arch: str, batch: int, repeats: int, workdir: Path, inner: int = 5) -> dict:
    from PIL import Image

    import ctinit
    from ctinit.models.finetuned_folder import save_finetuned
    from ctinit.predict import Predictor

    torch.manual_seed(0)
    classifier = ctinit.ImageClassifier(ctinit.build_backbone(arch), num_classes=10).eval()
    folder = save_finetuned(classifier, workdir / arch, labels=[f"class-{i}" for i in range(10)])
    predictor = Predictor.load(folder, device="cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, 28, 28, 3), dtype=np.uint8)
    files = []
    for i, image in enumerate(images):
        files.append(workdir / f"{arch}-{i}.png")
        Image.fromarray(image).save(files[-1])
    pixel_values = predictor.pixel_values(images).clone()
    model = predictor.model

    def loop():
        with torch.inference_mode():
            model(pixel_values=pixel_values)

    def predict():
        predictor(images, top_k=5)

    def predict_files():
        list(predictor.predict_files(files, top_k=5, batch_size=batch))

    fns = {"loop": loop, "predict": predict, "predict+files": predict_files}
    rows = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        fn()
    names = list(fns)
    for r in range(repeats):
        for name in names[r % 3:] + names[:r % 3]:  # rotate the order: no row always runs first or last
            rows[name].append(measure(fns[name], batch, inner))
    result = {name: statistics.median(values) for name, values in rows.items()}
    result["predict / loop"] = result["predict"] / result["loop"]
    result["predict+files / loop"] = result["predict+files"] / result["loop"]
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--inner", type=int, default=5, help="calls per timing")
    parser.add_argument("--archs", nargs="+", default=["convnet4-32", "resnet20"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
               "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        results = {arch: bench(arch, args.batch, args.repeats, Path(tmp), args.inner) for arch in args.archs}
    if args.json:
        print(json.dumps({"batch": args.batch, "repeats": args.repeats, "machine": machine, "results": results}))
        return 0
    print(f"images/s at batch {args.batch}, CPU ({machine['cores']} cores, {machine['threads']} threads, torch "
          f"{machine['torch']}), median of {args.repeats} interleaved rounds of {args.inner} calls")
    print("| backbone | model(pixel_values) loop | predict (arrays) | ratio | predict (PNG files) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for arch, r in results.items():
        print(f"| {arch} | {r['loop']:.0f} | {r['predict']:.0f} | {r['predict / loop']:.3f}x | "
              f"{r['predict+files']:.0f} | {r['predict+files / loop']:.3f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
