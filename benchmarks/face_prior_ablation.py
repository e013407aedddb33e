"""What each part of the face prior does to the generated faces: one `toolkit eval` row per variant.

    python benchmarks/face_prior_ablation.py --teacher demo-out/teacher [--student demo-out/student] [--json F]

Variants of the same model (toolkit.diffusion.prior), each through the whole anonymize pipeline on the bundled
photos (or --images DIR), next to blur and pixelate:
  no prior        RGB crops, sampling from pure noise (what a model without face_prior.npz does)
  colour split    gray crops for a gray-trained model, chroma from the context's skin (luma models only)
  + mean face     ... and sampling starts from the mean face on the keypoints, SDEdit at each --strengths
Prints a Markdown table (the figures of `toolkit eval`); --json writes them with the settings.
"""

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def variants(inpainter, strengths):
    """(label, inpainter view, prior strength) for each row; the views share the model's weights."""
    prior = inpainter.face_prior
    if prior is None:
        raise SystemExit("this model has no face prior (face_prior.npz): train it with the current toolkit")
    bare = copy.copy(inpainter)
    bare.face_prior = None
    rows = [("no prior", bare, 1.0)]
    if prior.colour == "luma":
        rows.append(("colour split", inpainter, 1.0))
    rows += [(f"+ mean face, strength {s:g}", inpainter, s) for s in strengths]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True, help="teacher run (method ddpm)")
    ap.add_argument("--student", type=Path, help="also ablate this student run")
    ap.add_argument("--images", type=Path, help="folder of photos (default: the bundled sample photos)")
    ap.add_argument("--strengths", default="0.4,0.6,0.8", help="SDEdit strengths to try (default %(default)s)")
    ap.add_argument("--steps", type=int, help="teacher sampling steps (default: the run's)")
    ap.add_argument("--no-fid", action="store_true")
    ap.add_argument("--json", type=Path, metavar="FILE")
    args = ap.parse_args()

    import torch

    from toolkit.artifacts import load_inpainter
    from toolkit.eval.evaluate import MethodSpec, evaluate, method_specs
    from toolkit.eval.report import markdown_table
    from toolkit.images import list_images

    torch.set_num_threads(1)
    if args.images:
        paths = list_images([args.images])
    else:
        from toolkit.assets import sample_photos

        paths = sample_photos()
    strengths = [float(s) for s in args.strengths.split(",")]
    specs = method_specs(["blur", "pixelate"])
    for name, run in (("ddpm", args.teacher), ("student", args.student)):
        if run is None:
            continue
        sampling = {"steps": args.steps} if args.steps and name == "ddpm" else {}
        for label, model, strength in variants(load_inpainter(run), strengths):
            specs.append(MethodSpec(f"{name}: {label}", "ddpm", model, {**sampling, "prior_strength": strength}))
    _, summary, _, _ = evaluate(paths, specs, fid=not args.no_fid)
    table = markdown_table(summary)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"teacher": str(args.teacher), "student": str(args.student),
                                         "images": len(paths), "summary": summary}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
