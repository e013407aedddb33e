"""`toolkit distill`: a 1-4 step, conv-only student for int8 microcontroller inference, distilled from the
guided teacher (see distill.py for the scheme and student.py for the architecture).

Public API:
  load_student_inpainter(run_dir)   the inpainter of a "student" run (the contract in toolkit/diffusion/__init__.py)
  load_int8_inpainter(run_dir)      the same for its int8 "quantized" run (the integer reference of the C code)
  quantize_student(...)             `toolkit quantize` of a student (toolkit.distill.quantize)
  Student, PRESETS, budget          the architecture, its presets and parameter / MAC counting
  Student.step_module(k)            plain Conv/ReLU/Upsample/cat/add network of step k for quantize/export
"""

_LAZY = {
    "StudentInpainter": "toolkit.distill.inpainter",
    "load_student_inpainter": "toolkit.distill.inpainter",
    "load_int8_inpainter": "toolkit.distill.int8_inpainter",
    "quantize_student": "toolkit.distill.quantize",
    **dict.fromkeys(("PRESETS", "Student", "StudentNet", "budget", "format_budget", "get_preset"),
                    "toolkit.distill.student"),
}


def __getattr__(name):  # PEP 562: a name loads its module on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
