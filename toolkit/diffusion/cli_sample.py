"""`toolkit sample`: inpaint the faces of an FDF-format dataset with a trained teacher (or student) run."""

import argparse
import json
import time
from pathlib import Path

from toolkit.diffusion.sampling import SCHEDULERS

EPILOG = """\
writes into --out:
  grid.png           one row per face: context | keypoints | generated | original
  images/<i>.png     each generated face (known pixels pasted back), <i> = the dataset index
  results.json       settings, time per face and the known-region error per face: the mean squared error,
                     over the known pixels, of the generated image *before* the known pixels are pasted back
                     (lower = the generated face agrees better with its surroundings)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sample", help="inpaint faces of an FDF dataset with a trained model",
        description="Inpaint the face boxes of an FDF-format dataset with a trained teacher/student run.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from toolkit.data.fdf import FDFDataset
    from toolkit.diffusion import load_inpainter
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
