"""Teacher speed: training step time per preset, and inpainting time per face vs sampling steps.

    python benchmarks/teacher_speed.py                 # tiny32 + small64 (+ fdf256 training at batch 1-2)
    python benchmarks/teacher_speed.py --quick         # tiny32 only
    python benchmarks/teacher_speed.py --device cuda   # default: cuda when present, else cpu
    python benchmarks/teacher_speed.py --threads 1     # on a shared, busy CPU (less thread contention)

Prints Markdown tables. Weights are freshly initialised (speed does not depend on them); inputs are real
face crops of skimage's astronaut photo. Each timing is the median over the timed repetitions after one
warm-up. Training steps are full optimizer steps (forward, backward, AdamW, EMA update) at fp32 on CPU and
bf16 autocast on CUDA. Sampling uses DDIM with classifier-free guidance (one batched UNet call for the
conditional and unconditional branch) and RePaint replacement; "+RG" adds reconstruction guidance (a backward
pass through the UNet per step).
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from toolkit.assets import ASTRONAUT_KEYPOINTS  # noqa: E402


def astronaut_batch(size: int, batch: int, device):
    """`batch` real face crops (astronaut + shifted/mirrored variants) with face-box masks and keypoints."""
    import cv2
    import skimage.data

    img = skimage.data.astronaut()
    kp = ASTRONAUT_KEYPOINTS
    images, masks, kps = [], [], []
    for i in range(batch):
        dx, dy = (i % 4) * 6 - 9, (i // 4 % 4) * 6 - 9
        x0, y0, side = 100 + dx, 20 + dy, 240
        crop = cv2.resize(img[y0 : y0 + side, x0 : x0 + side], (size, size), interpolation=cv2.INTER_AREA)
        k = (kp - [x0, y0]) / side
        if i % 2:
            from toolkit.keypoints import flip_keypoints

            crop, k = crop[:, ::-1], flip_keypoints(k)
        images.append(torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 127.5 - 1)
        m = torch.ones(1, size, size)
        m[:, int(0.2 * size) : int(0.65 * size), int(0.3 * size) : int(0.7 * size)] = 0
        masks.append(m)
        kps.append(torch.from_numpy(k).float())
    vis = torch.ones(batch, 7, dtype=torch.bool)
    return (torch.stack(images).to(device), torch.stack(masks).to(device), torch.stack(kps).to(device),
            vis.to(device))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train(preset_name: str, batch: int, reps: int, device) -> tuple[float, int]:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    from toolkit.diffusion.model import build_unet, condition_channels
    from toolkit.diffusion.presets import get_preset

    preset = get_preset(preset_name)
    torch.manual_seed(0)
    unet = build_unet(preset).to(device)
    n_params = sum(p.numel() for p in unet.parameters())
    ema = EMAModel(unet.parameters(), decay=0.999)
    ema.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    sched = DDPMScheduler(**preset["noise"])
    x0, m, kp, vis = astronaut_batch(preset["resolution"], batch, device)
    cond = condition_channels(x0, m, kp, vis, preset["keypoint_sigma"])
    abar = sched.alphas_cumprod.to(device)
    times = []
    for i in range(reps + 1):
        sync(device)
        t0 = time.perf_counter()
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,), device=device)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = unet(torch.cat([xt, cond], 1), t).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        sync(device)
        if i:  # first repetition is warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times), n_params


def time_sampling(preset_name: str, steps: int, batch: int, rg: float, device) -> float:
    from diffusers import DDPMScheduler

    from toolkit.diffusion.model import build_unet
    from toolkit.diffusion.sampling import guided_inpaint, make_scheduler
    from toolkit.diffusion.presets import get_preset

    preset = get_preset(preset_name)
    torch.manual_seed(0)
    unet = build_unet(preset).to(device).eval().requires_grad_(False)
    config = DDPMScheduler(**preset["noise"]).config
    images, masks, kp, vis = astronaut_batch(preset["resolution"], batch, device)
    # Warm-up with 1 step, then the timed run.
    guided_inpaint(unet, make_scheduler("ddim", config), images, masks, kp, vis,
                   keypoint_sigma=preset["keypoint_sigma"], steps=1, cfg_scale=1.5, rg_weight=rg)
    sync(device)
    t0 = time.perf_counter()
    guided_inpaint(unet, make_scheduler("ddim", config), images, masks, kp, vis,
                   keypoint_sigma=preset["keypoint_sigma"], steps=steps, cfg_scale=1.5, rg_weight=rg)
    sync(device)
    return (time.perf_counter() - t0) / batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny32 only")
    ap.add_argument("--no-fdf256", action="store_true", help="skip the fdf256 training rows")
    ap.add_argument("--full", action="store_true", help="on CPU too: every step count for every preset")
    ap.add_argument("--steps", default="10,25,50", help="sampling step counts (comma-separated)")
    ap.add_argument("--faces", type=int, default=8, help="faces per sampling batch")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", metavar="FILE", help="also write the printed tables as JSON")
    args = ap.parse_args()
    from _json_tables import capture_tables  # beside this script

    capture_tables(args.json)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {cpu})"
    load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
    # A busy machine (load above the core count) inflates every figure: the load is printed to judge them by.
    print(f"# Teacher speed on {where}, torch {torch.__version__}, {torch.get_num_threads()} threads{load}\n")

    train_rows = [("tiny32", 16, 3), ("small64", 16, 2)]
    if not args.quick and not args.no_fdf256:
        train_rows += [("fdf256", 1, 1), ("fdf256", 2, 1)] if device.type == "cpu" else [("fdf256", 16, 5)]
    if args.quick:
        train_rows = train_rows[:1]
    print("## Training step (forward + backward + AdamW + EMA)\n")
    print("| preset | params | batch | s/step | faces/s |")
    print("|---|---:|---:|---:|---:|")
    for name, batch, reps in train_rows:
        try:
            sec, n = time_train(name, batch, reps, device)
        except (RuntimeError, MemoryError) as exc:  # out of memory: say so, keep going
            print(f"| {name} | - | {batch} | failed: {str(exc).splitlines()[0][:60]} | - |")
            continue
        print(f"| {name} | {n / 1e6:.2f} M | {batch} | {sec:.3f} | {batch / sec:.3g} |", flush=True)

    steps = [int(s) for s in args.steps.split(",")]
    # On a CPU the bigger presets sample only at the fewest steps (time is linear in the step count).
    big_steps = steps if device.type == "cuda" or args.full else steps[:1]
    plan = [("tiny32", steps)]
    if not args.quick:
        plan.append(("small64", big_steps))
        if device.type == "cuda" or args.full:
            plan.append(("fdf256", big_steps))
    print(f"\n## Inpainting time per face (DDIM, CFG 1.5, RePaint, batch of {args.faces} faces)\n")
    print("| preset | steps | s/face | s/face +RG |")
    print("|---|---:|---:|---:|")
    for name, name_steps in plan:
        for st in name_steps:
            plain = time_sampling(name, st, args.faces, 0.0, device)
            rg = time_sampling(name, st, args.faces, 1.0, device)
            print(f"| {name} | {st} | {plain:.3f} | {rg:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
