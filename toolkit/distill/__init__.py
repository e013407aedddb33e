"""`toolkit distill`: a 1-4 step, conv-only student for int8 microcontroller inference, distilled from the
guided teacher (see distill.py for the scheme and student.py for the architecture).

Public API:
  load_student_inpainter(run_dir)   the `toolkit.diffusion.load_inpainter` contract for stage "student"
  Student, PRESETS, budget          the architecture, its presets and parameter / MAC counting
  Student.step_module(k)            plain Conv/ReLU/Upsample/cat/add network of step k for quantize/export
"""

from toolkit.distill.inpainter import StudentInpainter, load_student_inpainter
from toolkit.distill.student import PRESETS, Student, StudentNet, budget, format_budget, get_preset

__all__ = ["PRESETS", "Student", "StudentInpainter", "StudentNet", "budget", "format_budget", "get_preset",
           "load_student_inpainter"]
