"""int8 model (quantize artifact or QDQ ONNX) -> C arrays + generated inference code: the library behind
`toolkit export`, and what other stages call to export (`export_all`, `model_units`).

    toolkit export --model runs/student-q --target stm32f746 --out firmware/lib/model_student --name student

The folder gets `<name>.c/.h`, `<name>_weights.c`, `<name>_plan.json`, `<name>_tflite.c` (when the quantize
artifact has a .tflite) and a `toolkit.json` listing the models in it. A student artifact has one network per
denoising step: each becomes a model `<name>_step<k>`. Compile them with firmware/lib/tkengine (the kernel library).
Everything except `toolkit.json` (which records when it was made) is byte-identical for the same input.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.artifacts import read_manifest, write_manifest

QUANT_STAGE = "quantized"
EXPORT_STAGE = "exported"


def model_units(model, step: int | None = None) -> tuple[list, dict]:
    """([(step or None, QDQ onnx, .tflite or None)], manifest or {}) for an artifact directory or an .onnx.

    A student artifact holds one network per denoising step (`steps` in its manifest, files under
    `step<k>/`): each is its own C model. `step` picks one."""
    model = Path(model)
    if model.is_file():
        if model.suffix != ".onnx":
            raise ValueError(f"{model}: expected a .onnx file or a quantize artifact directory")
        if step is not None:
            raise ValueError("--step only applies to a quantize artifact with several step networks")
        return [(None, model, None)], {}
    manifest = read_manifest(model, expect_stage=QUANT_STAGE)
    steps = manifest.get("steps")
    if isinstance(steps, dict) and steps:
        keys = sorted(steps, key=lambda k: int(k))
        if step is not None:
            if str(step) not in steps:
                raise ValueError(f"{model}: no step {step}; the artifact has steps {', '.join(keys)}")
            keys = [str(step)]
        units = []
        for k in keys:
            files = steps[k].get("files", {})
            onnx_rel = files.get("qdq_onnx")
            if not onnx_rel or not (model / onnx_rel).is_file():
                raise ValueError(f"{model}: step {k} has no QDQ ONNX file (files: {files})")
            tfl = files.get("tflite")
            units.append((int(k), model / onnx_rel, model / tfl if tfl and (model / tfl).is_file() else None))
        return units, manifest
    if step is not None:
        raise ValueError(f"{model}: this artifact has no step networks; drop --step")
    onnx_path, tflite_path = _single_model_files(model, manifest)
    return [(None, onnx_path, tflite_path)], manifest


def find_model_files(model) -> tuple[Path, Path | None, dict]:
    """(QDQ onnx, .tflite or None, manifest) of a single-network artifact or .onnx (the first step otherwise)."""
    units, manifest = model_units(model)
    return units[0][1], units[0][2], manifest


def _single_model_files(model: Path, manifest: dict):
    named = [v for v in _strings(manifest) if v.endswith((".onnx", ".tflite"))]
    onnx_files = [model / v for v in named if v.endswith(".onnx") and (model / v).is_file()]
    onnx_files += [p for p in sorted(model.glob("*.onnx")) if p not in onnx_files]
    qdq = [p for p in onnx_files if _is_qdq(p)]
    if not qdq:
        raise ValueError(f"{model}: no QDQ ONNX model (with QuantizeLinear/DequantizeLinear) in this artifact")
    qdq.sort(key=lambda p: (0 if any(k in p.name.lower() for k in ("qdq", "int8", "quant")) else 1))
    tfl = [model / v for v in named if v.endswith(".tflite") and (model / v).is_file()]
    tfl += [p for p in sorted(model.glob("*.tflite")) if p not in tfl]
    tfl.sort(key=lambda p: 0 if "int8" in p.name.lower() else 1)
    return qdq[0], (tfl[0] if tfl else None)


def _strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def _is_qdq(path: Path) -> bool:
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    return any(n.op_type == "QuantizeLinear" for n in m.graph.node)


def check_fit(report: dict, target: str, total_weight_bytes: int | None = None) -> dict:
    """Weights in flash and arena + I/O buffers in RAM of the board (`toolkit.deploy.fit`, which also reserves
    room for the firmware); raises ValueError naming budget and need.

    `total_weight_bytes`: flash of all networks exported together (the steps of a student), if more than this
    one's."""
    from toolkit.boards import load_board
    from toolkit.deploy import fit

    peak = report["peak_layer"]
    layer = report["layers"][peak["index"]]
    in_bytes, out_bytes = _prod(report["input"]["shape"]), _prod(report["output"]["shape"])
    estimate = fit.MemoryEstimate(
        weight_bytes=total_weight_bytes or report["weight_bytes"],
        peak_bytes=report["arena_bytes"] + in_bytes + out_bytes,
        peak_layer=fit.LayerMemory(peak["name"], layer["kind"], tuple(layer["output"]["shape"]),
                                   layer["output"]["bytes"], peak["live_bytes"]),
        input_bytes=in_bytes, output_bytes=out_bytes, method="codegen-arena-plan (arena + input + output buffers)")
    return fit.check_fit(estimate, load_board(target), what=f"model '{report['name']}'")


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def export(model, target: str, out, name: str | None = None, embed_tflite: bool = True,
           step: int | None = None) -> dict:
    """Generate the C module of a single network into `out`; returns its plan report (also written as JSON)."""
    units, _ = model_units(model, step)
    if len(units) != 1:
        raise ValueError(f"{model} holds {len(units)} step networks; pass step=K or use export_all")
    return export_all(model, target, out, name, embed_tflite, step)[0]


def export_all(model, target: str, out, name: str | None = None, embed_tflite: bool = True,
               step: int | None = None) -> list[dict]:
    """Generate one C module per network of `model` (per step of a student: `<name>_step<k>`) into `out`.

    Everything is generated and fit-checked (flash for all networks together) before any file is written."""
    from toolkit.deploy import codegen
    from toolkit.deploy.ir import load_qdq

    units, manifest = model_units(model, step)
    base = name
    if base is None:
        base = codegen.c_name(manifest.get("name") or (Path(model).name if Path(model).is_dir() else Path(model).stem))
    codegen.check_c_name(base)
    out = Path(out)
    model_dir = Path(model) if Path(model).is_dir() else Path(model).parent
    if out.resolve() == model_dir.resolve():
        raise ValueError(f"--out {out} is the input's folder; choose a separate folder for generated code")
    def generate_units(wide: bool) -> list:
        generated = []
        for k, onnx_path, tflite_path in units:
            unit_name = base if k is None else f"{base}_step{k}"
            codegen.check_c_name(unit_name)
            graph = load_qdq(onnx_path)
            tflite = tflite_path.read_bytes() if (embed_tflite and tflite_path is not None) else None
            files, report = codegen.generate(graph, unit_name, source_name=onnx_path.name,
                                             source_sha256=codegen.sha256_file(onnx_path), tflite=tflite, wide=wide)
            report["step"] = k
            generated.append((unit_name, onnx_path, tflite_path if tflite is not None else None, files, report))
        return generated

    # int16 weights run the fast convolution but take twice the flash: the fit check decides
    generated = generate_units(wide=True)
    try:
        [check_fit(g[4], target, sum(g[4]["weight_bytes"] for g in generated)) for g in generated]
    except ValueError:
        generated = generate_units(wide=False)
    total_weights = sum(g[4]["weight_bytes"] for g in generated)
    fits = [check_fit(g[4], target, total_weights) for g in generated]  # a model that does not fit writes nothing

    models = {}
    if (out / "toolkit.json").exists():  # several models may share one generated folder (firmware/generated)
        try:
            previous = read_manifest(out, expect_stage=EXPORT_STAGE)
        except ValueError as exc:
            raise ValueError(f"--out {out} holds another stage's artifact; choose another folder ({exc})") from exc
        models = {k: v for k, v in previous.get("models", {}).items() if k not in {g[0] for g in generated}}
    for (unit_name, onnx_path, tflite_path, files, report), fit in zip(generated, fits):
        codegen.write_files(files, out)
        models[unit_name] = {
            "target": target, "source": str(onnx_path), "source_sha256": report["source"]["sha256"],
            "step": report["step"], "tflite": str(tflite_path) if tflite_path is not None else None,
            "files": sorted(files), "arena_bytes": report["arena_bytes"], "weight_bytes": report["weight_bytes"],
            "macs": report["macs"], "fit": fit,
        }
    write_manifest(out, EXPORT_STAGE, models=dict(sorted(models.items())))
    return [g[4] for g in generated]
