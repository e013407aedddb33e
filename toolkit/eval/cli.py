"""`toolkit eval`: is the person still recognizable, and is the image still useful?"""

from pathlib import Path


def register(sub):
    p = sub.add_parser(
        "eval",
        help="measure identity leak, keypoint preservation, realism and speed of anonymization methods",
        description="Anonymize the images in --images with each method and write a report (Markdown, HTML, "
                    "JSON, CSV, image grids, plots) comparing them with the originals.",
    )
    p.add_argument("--images", required=True, type=Path, help="folder (or single image) of real photos")
    p.add_argument("--methods", default="blur,pixelate,mask",
                   help="comma-separated: ddpm, student, student-int8, blur, pixelate, mask (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="report folder")
    p.add_argument("--teacher", type=Path, help="teacher run for method ddpm")
    p.add_argument("--student", type=Path, help="student run for method student")
    p.add_argument("--student-int8", "--quantized", dest="quantized", type=Path, metavar="QUANTIZED_RUN",
                   help="quantized student run (`toolkit quantize --out`) for method student-int8: its int8 "
                        "step networks run bit-exactly as the generated C code does")
    p.add_argument("--steps", type=int, help="sampling steps for the teacher (default: the model's)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--rg-weight", type=float, help="reconstruction guidance weight (default: the model's)")
    p.add_argument("--prior-strength", type=float,
                   help="SDEdit start from the model's face prior for ddpm/student/student-int8 (1 = pure noise; "
                        "default: toolkit anonymize's)")
    p.add_argument("--blur-sigma", type=float, help="Gaussian sigma for method blur (default: scaled to the face)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, help="evaluate only the first N images")
    p.add_argument("--no-fid", action="store_true", help="skip KID and FID (they load an Inception network)")
    p.set_defaults(func=run)


def run(args) -> int:
    from toolkit.eval.evaluate import evaluate, method_specs
    from toolkit.eval.report import summary_notes, markdown_table, write_report
    from toolkit.images import list_images

    if not args.images.exists():
        raise FileNotFoundError(f"{args.images}: no such file or folder")
    paths = list_images([args.images])[: args.max_images]
    if not paths:
        raise ValueError(f"{args.images}: no images found")
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    sampling = {k: v for k, v in {"steps": args.steps, "cfg_scale": args.cfg_scale,
                                  "rg_weight": args.rg_weight}.items() if v is not None}
    specs = method_specs(names, teacher=args.teacher, student=args.student, quantized=args.quantized,
                         sampling=sampling, blur_sigma=args.blur_sigma, prior_strength=args.prior_strength)
    rows, summary, samples, errors = evaluate(paths, specs, seed=args.seed, fid=not args.no_fid)
    settings = {"images": str(args.images), "methods": names, "seed": args.seed, **sampling,
                "prior_strength": args.prior_strength,
                "teacher": args.teacher, "student": args.student, "quantized": args.quantized}
    write_report(args.out, rows, summary, samples, errors, settings)
    print(markdown_table(summary))
    if note := summary_notes(summary):
        print(note)
    print(f"report: {args.out / 'report.html'}")
    for e in errors:
        print(f"problem: {e}")
    return 0 if rows else 1
