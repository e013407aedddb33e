"""The one writer of generated C. Every file the toolkit generates for the firmware goes through here: the
models' code (`codegen.generate`), the model registry (`registry_source`) and the on-device pipeline's
constants (`toolkit.onboard.config.c_sources`), so they share one array format and one way to land on disk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def c_array(ctype: str, name: str, values, per_line: int = 16, align: int | None = None,
            static: bool = False) -> str:
    """`[static ]const ctype name[n] [TK_ALIGN(align)] = {...};`, `per_line` values a line. An empty array
    holds one 0 (C has no zero-length arrays)."""
    values = np.asarray(values).reshape(-1)
    lines = ["    " + ", ".join(str(int(v)) for v in values[i: i + per_line]) + ","
             for i in range(0, len(values), per_line)]
    body = "\n".join(lines) if lines else "    0,"
    attr = f" TK_ALIGN({align})" if align else ""
    return f"{'static ' if static else ''}const {ctype} {name}[{max(len(values), 1)}]{attr} = {{\n{body}\n}};\n"


def c_bytes(name: str, data: bytes) -> str:
    """A byte array (an embedded file) and its length, 16-byte aligned."""
    lines = []
    for i in range(0, len(data), 12):
        lines.append("  " + ", ".join(f"0x{b:02x}" for b in data[i: i + 12]))
    body = ",\n".join(lines)
    return (f"const unsigned char {name}[] TK_ALIGN(16) = {{\n{body}\n}};\n"
            f"const unsigned int {name}_len = {len(data)};\n")


def registry_source(names: list[str], pipeline: bool = False) -> str:
    """models.c of the benchmark firmware: the model table, and `tk_pipeline` (the generated
    pipeline_config.c when `pipeline`, else NULL)."""
    lines = [
        "/* Model registry of the benchmark firmware, written by toolkit.bench.firmware (`toolkit bench`).",
        " * Do not edit: regenerate with `python -m toolkit.bench.firmware registry`. */",
        "#include <stddef.h>",
        "",
        '#include "tk_registry.h"',
    ]
    lines += [f'#include "{n}.h"' for n in names]
    if pipeline:
        lines.append('#include "pipeline_config.h"')
    entries = "".join(f"&{n}_model, " for n in names)
    lines += [
        "",
        f"const tk_model_t *const tk_models[] = {{{entries}NULL}};",
        f"const uint32_t tk_model_count = {len(names)};",
        "const tk_pipeline_t *const tk_pipeline = " + ("&tk_pipeline_config;" if pipeline else "NULL;"),
        "",
    ]
    return "\n".join(lines)


def write_sources(files: dict[str, str], out_dir) -> list[Path]:
    """Writes {file name: text} into `out_dir`, each atomically; a file whose text is already there is left
    alone (same mtime, so the firmware is not rebuilt). Returns the paths in name order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for fname in sorted(files):
        path = out_dir / fname
        if not path.is_file() or path.read_text() != files[fname]:
            tmp = path.with_name(f".{fname}.tmp")
            tmp.write_bytes(files[fname].encode())
            tmp.replace(path)
        written.append(path)
    return written
