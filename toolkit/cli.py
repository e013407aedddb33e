"""`toolkit` command line: one verb per stage.

Each stage's `cli.py` exposes one `register...(subparsers)` per verb, which adds it and sets `func` on the
parser. They are imported lazily (only the chosen verb's code loads torch / tensorflow).
"""

import argparse
import contextlib
import importlib
import sys

from toolkit import __version__
from toolkit.boards import extra_boards_dir
from toolkit.errors import LibraryFailure

# verb -> ("module" with register(), or "module:function" that registers it, one-line help); imported when chosen.
VERBS = {
    "assets": ("toolkit.assets", "fetch pretrained detector models and sample photos into the cache"),
    "detect": ("toolkit.detect.cli", "find faces and the 7 FDF keypoints in images"),
    "data": ("toolkit.data.cli", "check or build FDF-format datasets"),
    "train": ("toolkit.diffusion.cli:register_train", "train the keypoint-conditioned diffusion teacher"),
    "sample": ("toolkit.diffusion.cli:register_sample", "inpaint faces of an FDF dataset with a trained model"),
    "anonymize": ("toolkit.anonymize.cli", "replace every face in images, folders, videos or COCO sets"),
    "distill": ("toolkit.distill.cli", "distill the teacher into a 1-4 step microcontroller student"),
    "boards": ("toolkit.boards_cli", "list the board profiles (--target names)"),
    "quantize": ("toolkit.deploy.cli:register_quantize", "NNCF quantization-aware fine-tuning and int8 export"),
    "export": ("toolkit.deploy.cli:register_export", "generate C arrays and int8 inference code"),
    "bench": ("toolkit.bench.cli", "run a model on a board or QEMU and collect timings"),
    "demo": ("toolkit.demo", "run the whole chain on the bundled real photos (resumable)"),
    "eval": ("toolkit.eval.cli", "measure identity leak, keypoint preservation and realism per method"),
    "pose": ("toolkit.pose.cli", "train / evaluate the tiny MCU pose estimator on anonymized images"),
}


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `verb`'s module is imported (the others are listed by name and help)."""
    parser = argparse.ArgumentParser(
        prog="toolkit",
        description="Privacy-friendly image preparation for TinyML: replace faces with generated ones.",
    )
    parser.add_argument("--version", action="version", version=f"toolkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    _add_boards_dir(parser, default=None)
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (module_name, help_text) in VERBS.items():
        if name != verb:
            sub.add_parser(name, help=help_text)
            continue
        module, _, register = module_name.partition(":")
        getattr(importlib.import_module(module), register or "register")(sub)
        # also after the verb; SUPPRESS keeps a value given before it
        _add_boards_dir(sub.choices[name], default=argparse.SUPPRESS)
    return parser


def _add_boards_dir(parser, default) -> None:
    parser.add_argument("--boards-dir", metavar="DIR", default=default,
                        help="your own board profiles (NAME.json), over the bundled ones and $TOOLKIT_BOARDS")


def _verb(argv: list[str]) -> str | None:
    """The first word that is neither an option nor the value of --boards-dir."""
    words = iter(argv)
    for a in words:
        if a == "--boards-dir":
            next(words, None)
        elif not a.startswith("-"):
            return a
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_verb(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    command = "toolkit " + " ".join(argv)
    try:
        with extra_boards_dir(args.boards_dir) if args.boards_dir else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        # Our verbs return their status; a SystemExit from inside one is a library (or a nested verb's argument
        # parser) quitting the process. Say which stage and command it ended, instead of exiting silently.
        if getattr(args, "debug", False):
            raise
        print(f"toolkit {args.verb}: error: a library called sys.exit({exc.code!r}) during `{command}`; "
              "its own message, if any, is printed above", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Known user-facing failures: one clear message, no traceback.
        if getattr(args, "debug", False):
            raise
        print(f"toolkit {args.verb}: error: {exc}", file=sys.stderr)
        if isinstance(exc, LibraryFailure):
            print(f"  command: {command}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
