"""`toolkit train` (the keypoint-conditioned diffusion teacher on an FDF-format dataset) and `toolkit sample`
(inpaint the faces of an FDF-format dataset with a trained teacher or student run)."""

import argparse
import json
import time
from pathlib import Path

from toolkit.diffusion.presets import PRESETS
from toolkit.diffusion.sampling import SCHEDULERS

TRAIN_EPILOG = """\
examples:
  toolkit train --data fdf64/ --preset tiny32 --out runs/tiny --max-steps 300      # CPU, minutes
  accelerate launch -m toolkit.cli train --data FDF256/ --preset fdf256 --out runs/fdf256   # GPUs
  toolkit train --data FDF256/ --preset fdf256 --out runs/fdf256 --resume           # after a crash/kill

The run folder holds checkpoints/ (atomic, resumable after SIGKILL), log.csv, samples/*.png and, at the end,
the artifact: unet/ (EMA weights, UNet2DModel.from_pretrained), scheduler/ and toolkit.json.
--resume continues from the newest checkpoint and gives the same weights as an uninterrupted run; it refuses
a configuration (data, preset, batch size, lr, seed, ...) that differs from the run's. --max-steps may grow.
"""


def register_train(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train the keypoint-conditioned diffusion teacher",
        description="Train the keypoint-conditioned diffusion teacher (diffusers UNet2DModel, HF Accelerate).",
        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, help="FDF-format dataset directory (train/ and optionally val/)")
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), help="model size and resolution")
    p.add_argument("--out", required=True, help="run directory (created; must be new unless --resume)")
    p.add_argument("--max-steps", type=int, default=None, help="total optimizer steps (default: the preset's)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--batch-size", type=int, default=None, help="faces per step per process (default: preset)")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: preset)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, data order, noise (default 0)")
    p.add_argument("--cfg-dropout", type=float, default=None,
                   help="probability of dropping the keypoint condition, for classifier-free guidance")
    p.add_argument("--ema-decay", type=float, default=None, help="EMA decay of the saved weights")
    p.add_argument("--sample-every", type=int, default=None, help="write a sample grid every N steps (0 = end only)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint every N steps (0 = end only)")
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--augment", default=None, metavar="K=V,...",
                   help="jitter per face and step, e.g. scale=0.1,shift=0.05,brightness=0.1,contrast=0.15 "
                        "(fractions; default: the preset's, none in the built-in presets)")
    p.add_argument("--mixed-precision", choices=["auto", "no", "fp16", "bf16"], default="auto",
                   help="auto = bf16 on a GPU that supports it, else fp16 on GPU, none on CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def resolve_mixed_precision(choice: str) -> str:
    import torch

    if choice != "auto":
        if choice != "no" and not torch.cuda.is_available():
            raise ValueError(f"--mixed-precision {choice} needs a GPU; this machine has none (use 'no')")
        return choice
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def parse_augment(spec):
    """'scale=0.1,shift=0.05' -> {"scale": 0.1, "shift": 0.05}; None -> None (the preset's)."""
    if spec is None:
        return None
    from toolkit.diffusion.train import AUGMENTS

    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, _, value = item.partition("=")
        if key not in AUGMENTS:
            raise ValueError(f"--augment: unknown {key!r}; choose from {', '.join(AUGMENTS)}")
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"--augment: {item!r} is not KEY=NUMBER") from None
        if not 0 <= out[key] < 1:
            raise ValueError(f"--augment: {key} must be in [0, 1), got {value}")
    return out


def run_train(args) -> int:
    from accelerate import Accelerator

    from toolkit.diffusion.train import check_data, make_config, train

    check_data(args.data)  # before anything heavy, so a bad --data fails fast
    mp = resolve_mixed_precision(args.mixed_precision)
    accelerator = Accelerator(mixed_precision=mp)
    cfg = make_config(
        args.data, args.out, args.preset, max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, cfg_dropout=args.cfg_dropout, ema_decay=args.ema_decay, sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every, num_workers=args.num_workers, mixed_precision=mp,
        world_size=accelerator.num_processes, flip=False if args.no_flip else None,
        augment=parse_augment(args.augment), progress=not args.no_progress,
    )
    run_dir = train(cfg, resume=args.resume, accelerator=accelerator)
    if accelerator.is_main_process:
        print(f"teacher written to {run_dir} (load with toolkit.artifacts.load_inpainter or "
              f"UNet2DModel.from_pretrained('{run_dir}/unet'))")
    return 0


SAMPLE_EPILOG = """\
writes into --out:
  grid.png           one row per face: context | keypoints | generated | original
  images/<i>.png     each generated face (known pixels pasted back), <i> = the dataset index
  results.json       settings, time per face and the known-region error per face: the mean squared error,
                     over the known pixels, of the generated image *before* the known pixels are pasted back
                     (lower = the generated face agrees better with its surroundings)
"""


def register_sample(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="inpaint faces of an FDF dataset with a trained model",
        description="Inpaint the face boxes of an FDF-format dataset with a trained teacher/student run.",
        epilog=SAMPLE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="run directory of `toolkit train` (or `toolkit distill`)")
    p.add_argument("--data", required=True, help="FDF-format dataset directory")
    p.add_argument("--out", required=True, help="output directory (created; must be new or empty)")
    p.add_argument("--split", choices=["train", "val"], default=None, help="dataset split (default: val if present)")
    p.add_argument("-n", "--num", type=int, default=8, help="number of faces (the first N of the split; default 8)")
    p.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="sampler (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--rg-weight", type=float, default=None, help="reconstruction guidance weight (0 = off)")
    p.add_argument("--no-repaint", action="store_true", help="no RePaint replacement of known pixels per step")
    p.add_argument("--seed", type=int, default=0, help="face i uses seed + i (default 0)")
    p.add_argument("--batch-size", type=int, default=None, help="faces per model call (teacher; default 16)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    p.set_defaults(func=run_sample)


def run_sample(args) -> int:
    import torch

    from toolkit.data.fdf import FDFDataset
    from toolkit.artifacts import load_inpainter
    from toolkit.diffusion.grids import keypoint_overlay, to_uint8, write_grid
    from toolkit.diffusion.sampling import TeacherInpainter
    from toolkit.images import save_rgb

    if args.num < 1:
        raise ValueError(f"-n must be >= 1, got {args.num}")
    data = Path(args.data)
    if not data.is_dir():
        raise FileNotFoundError(f"--data {data}: no such directory")
    out = Path(args.out)
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise ValueError(f"--out {out} is inside the dataset {data}; choose a folder outside it")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out} exists and is not empty; choose a new folder")
    model = load_inpainter(args.model, device=args.device) if args.device else load_inpainter(args.model)
    split = args.split or ("val" if (data / "val").is_dir() else "train")
    dataset = FDFDataset(data, split, size=model.resolution)
    n = min(args.num, len(dataset))
    items = [dataset.get(i) for i in range(n)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "keypoints", "visible")}
    sampling = {k: v for k, v in (("scheduler", args.scheduler), ("steps", args.steps),
                                  ("cfg_scale", args.cfg_scale), ("rg_weight", args.rg_weight)) if v is not None}
    if args.no_repaint:
        sampling["repaint"] = False
    if not isinstance(model, TeacherInpainter) and (sampling or args.batch_size is not None):
        raise ValueError("--scheduler, --steps, --cfg-scale, --rg-weight, --no-repaint and --batch-size are teacher "
                         f"options; {args.model} is a student (its own fixed steps, guidance baked in)")
    t0 = time.time()
    if isinstance(model, TeacherInpainter):
        generated, info = model.inpaint(batch["image"], batch["mask"], batch["keypoints"], batch["visible"],
                                        seed=args.seed, return_info=True, progress=True,
                                        max_batch=max(1, args.batch_size or 16), **sampling)
        errors = [float(e) for e in info["known_error"]]
    else:  # another stage's inpainter: only the plain contract, which returns pasted images
        generated = model.inpaint(batch["image"], batch["mask"], batch["keypoints"], batch["visible"],
                                  seed=args.seed)
        errors = None
    seconds = time.time() - t0

    out.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(to_uint8(generated)):
        save_rgb(img, out / "images" / f"{i}.png")
    sigma = float(getattr(model, "keypoint_sigma", 1.0))
    kp = keypoint_overlay(batch["image"], batch["mask"], batch["keypoints"], batch["visible"], sigma)
    write_grid(out / "grid.png", [batch["image"] * batch["mask"], kp, generated, batch["image"]])
    results = {
        "model": str(Path(args.model).resolve()),
        "data": str(data.resolve()),
        "split": split,
        "num_faces": n,
        "seed": args.seed,
        "sampling": {**getattr(model, "defaults", {}), **sampling},
        "seconds_per_face": seconds / n,
        "known_error": {"per_face": errors, "mean": sum(errors) / n} if errors else None,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    err = f"; known-region error (MSE, [-1,1] scale) {results['known_error']['mean']:.3g}" if errors else ""
    print(f"{n} faces -> {out} ({seconds / n:.2f} s/face){err}")
    return 0
