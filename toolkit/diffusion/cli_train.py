"""`toolkit train`: train the keypoint-conditioned diffusion teacher on an FDF-format dataset."""

import argparse

from toolkit.diffusion.presets import PRESETS

EPILOG = """\
examples:
  toolkit train --data fdf64/ --preset tiny32 --out runs/tiny --max-steps 300      # CPU, minutes
  accelerate launch -m toolkit.cli train --data FDF256/ --preset fdf256 --out runs/fdf256   # GPUs
  toolkit train --data FDF256/ --preset fdf256 --out runs/fdf256 --resume           # after a crash/kill

The run folder holds checkpoints/ (atomic, resumable after SIGKILL), log.csv, samples/*.png and, at the end,
the artifact: unet/ (EMA weights, UNet2DModel.from_pretrained), scheduler/ and toolkit.json.
--resume continues from the newest checkpoint and gives the same weights as an uninterrupted run; it refuses
a configuration (data, preset, batch size, lr, seed, ...) that differs from the run's. --max-steps may grow.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train the keypoint-conditioned diffusion teacher",
        description="Train the keypoint-conditioned diffusion teacher (diffusers UNet2DModel, HF Accelerate).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
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
    p.set_defaults(func=run)


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


def run(args) -> int:
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
        print(f"teacher written to {run_dir} (load with toolkit.diffusion.load_inpainter or "
              f"UNet2DModel.from_pretrained('{run_dir}/unet'))")
    return 0
