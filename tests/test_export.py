"""`toolkit export`: generated C code compiled and run on real inputs, bit-exact to the Python int8 reference."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolkit.artifacts import write_manifest
from toolkit.cli import main as toolkit_main
from toolkit.deploy import codegen, int8ref, ir
from toolkit.deploy.export import check_fit, export

ROOT = Path(__file__).resolve().parent.parent
TKENGINE = ROOT / "firmware" / "lib" / "tkengine"
HARNESS = Path(__file__).resolve().parent / "export_c"
HOST_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
ARM_CPUS = {
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m7": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
}

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="host gcc not installed")


@pytest.fixture(scope="module")
def exported(export_models, tmp_path_factory):
    """{'student': dir, 'every': dir}; the student through the CLI, the every-kernel model through the API."""
    base = tmp_path_factory.mktemp("exported")
    rc = toolkit_main(["export", "--model", str(export_models["student"]), "--target", "stm32f746",
                       "--out", str(base / "student"), "--name", "student"])
    assert rc == 0
    export(export_models["every"], "qemu-m4", base / "every", name="every")
    # the int8-weight convolutions, which export uses when int16 weights would not fit the flash
    files, _ = codegen.generate(ir.load_qdq(export_models["every"]), "every_int8", wide=False)
    codegen.write_files(files, base / "every_int8")
    return {"student": base / "student", "every": base / "every", "every_int8": base / "every_int8"}


def _build(gen_dir: Path, name: str, out: Path, extra=()):
    cmd = ["gcc", *HOST_FLAGS, *extra, f"-I{TKENGINE / 'include'}", f"-I{gen_dir}",
           f"-DTK_MODEL={name}_model", f'-DTK_MODEL_HEADER="{name}.h"', str(HARNESS / "harness.c"),
           str(gen_dir / f"{name}.c"), str(gen_dir / f"{name}_weights.c"),
           *map(str, sorted((TKENGINE / "src").glob("*.c"))), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


def _run_c(binary: Path, q_in: np.ndarray, tmp: Path):
    (tmp / "in.bin").write_bytes(q_in.tobytes())
    res = subprocess.run([str(binary), str(tmp / "in.bin"), str(tmp / "out.bin")], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    info = dict(kv.split("=") for kv in res.stdout.split())
    return np.frombuffer((tmp / "out.bin").read_bytes(), np.int8), {k: int(v) for k, v in info.items()}


@needs_gcc
@pytest.mark.parametrize("key", ["student", "every", "every_int8"])
@pytest.mark.parametrize("path", ["portable", "dsp_emulated", "sanitized"])
def test_generated_code_is_bit_exact_to_reference(exported, export_models, export_test_inputs, tmp_path, key, path):
    extra = {"portable": [], "dsp_emulated": ["-DTK_DSP_EMULATE", f"-I{HARNESS}"],
             "sanitized": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-g"]}[path]
    binary = _build(exported[key], key, tmp_path / f"{key}_{path}", extra)
    graph = ir.load_qdq(export_models[key.removesuffix("_int8")])
    plan = json.loads((exported[key] / f"{key}_plan.json").read_text())
    inputs = export_test_inputs[key.removesuffix("_int8")][: (1 if path == "sanitized" else None)]
    for x in inputs:
        q_in = int8ref.quantize_input(graph, x)
        expected = int8ref.run(graph, q_in).reshape(-1)
        got, info = _run_c(binary, q_in, tmp_path)
        assert info["rc"] == 0
        assert info["dsp"] == (1 if path == "dsp_emulated" else 0)
        np.testing.assert_array_equal(got, expected)
        # canary: the highest arena byte the run wrote is exactly the planned arena size
        assert info["arena_size"] == plan["arena_bytes"]
        assert info["touched"] == plan["arena_bytes"]
        assert len(set(got.tolist())) > 8  # a real picture, not a constant


def test_arena_plan_reuses_memory_and_works_in_place(exported):
    plan = json.loads((exported["every"] / "every_plan.json").read_text())
    tensors = plan["tensors"]
    total = sum(t["bytes"] for t in tensors)
    assert plan["arena_bytes"] < total  # offsets are reused
    # no two tensors alive at the same time overlap
    for i, a in enumerate(tensors):
        for b in tensors[i + 1:]:
            if a["first_op"] <= b["last_op"] and b["first_op"] <= a["last_op"]:
                assert a["offset"] + a["bytes"] <= b["offset"] or b["offset"] + b["bytes"] <= a["offset"]
    assert any(layer["in_place"] for layer in plan["layers"])  # the residual add writes over its input
    assert plan["macs"] == sum(layer["macs"] for layer in plan["layers"]) > 0
    kernels = {layer["kernel"] for layer in plan["layers"]}
    assert kernels == {"tk_conv2d_wide_s8", "tk_depthwise_conv2d_s8", "tk_add_s8", "tk_pad_s8",
                       "tk_upsample_nearest_s8", "tk_concat_s8"}
    # each wide convolution's scratch lives during its op only
    scratch = [t for t in tensors if t["tensors"][0].startswith("scratch:")]
    assert scratch and all(t["first_op"] == t["last_op"] for t in scratch)
    int8_plan = json.loads((exported["every_int8"] / "every_int8_plan.json").read_text())
    assert {layer["kernel"] for layer in int8_plan["layers"]} == {
        "tk_conv2d_s8", "tk_conv2d_3x3_s8", "tk_conv2d_1x1_s8", "tk_depthwise_conv2d_s8", "tk_add_s8", "tk_pad_s8",
        "tk_upsample_nearest_s8", "tk_concat_s8"}


def test_export_is_deterministic(export_models, exported, tmp_path):
    again = tmp_path / "again"
    export(export_models["student"], "stm32f746", again, name="student")
    first = {p.name: p.read_bytes() for p in exported["student"].iterdir() if p.name != "toolkit.json"}
    second = {p.name: p.read_bytes() for p in again.iterdir() if p.name != "toolkit.json"}
    assert sorted(first) == ["student.c", "student.h", "student_plan.json", "student_weights.c"]
    # a second model in the same folder keeps the first one's files and manifest entry
    export(export_models["every"], "native", again, name="every")
    from toolkit.artifacts import read_manifest

    assert sorted(read_manifest(again, expect_stage="exported")["models"]) == ["every", "student"]
    assert (again / "student.c").read_bytes() == first["student.c"]
    assert first == second
    header = first["student.h"].decode()
    assert "#define STUDENT_ARENA_SIZE" in header and "extern const tk_model_t student_model;" in header
    assert "int student_invoke(const int8_t *in, int8_t *out, uint8_t *arena);" in header


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("cpu", sorted(ARM_CPUS))
def test_cross_compiles_for_cortex_m_with_dsp(exported, tmp_path, cpu):
    objs = []
    for key, gen in exported.items():
        for src in [gen / f"{key}.c", gen / f"{key}_weights.c", *sorted((TKENGINE / "src").glob("*.c"))]:
            obj = tmp_path / f"{key}_{src.stem}.o"
            res = subprocess.run(["arm-none-eabi-gcc", *HOST_FLAGS, *ARM_CPUS[cpu], "-ffunction-sections",
                                  f"-I{TKENGINE / 'include'}", f"-I{gen}", "-c", str(src), "-o", str(obj)],
                                 capture_output=True, text=True)
            assert res.returncode == 0 and not res.stderr, res.stderr
            objs.append(obj)
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "student_tk_conv.o")],
                         capture_output=True, text=True).stdout
    assert re.search(r"\bsmlad\b", dis) and re.search(r"\bsxtab16\b", dis)  # the DSP path was selected


def test_tflite_is_embedded_in_xxd_form(export_models, tmp_path):
    run = tmp_path / "quant_run"
    run.mkdir()
    shutil.copy(export_models["student"], run / "model_int8_qdq.onnx")
    # stand-in bytes for the artifact's .tflite: embedding must reproduce any file byte for byte
    blob = bytes(range(256)) * 3 + b"\x00TFL3"
    (run / "model_int8.tflite").write_bytes(blob)
    write_manifest(run, "quantized", name="tiny-student", onnx="model_int8_qdq.onnx", tflite="model_int8.tflite")
    out = tmp_path / "gen"
    report = export(run, "native", out)
    assert report["name"] == "tiny_student"
    text = (out / "tiny_student_tflite.c").read_text()
    body = text.split("{", 1)[1].split("}", 1)[0]
    assert bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", body)) == blob
    assert f"const unsigned int tiny_student_tflite_len = {len(blob)};" in text
    assert "extern const unsigned char tiny_student_tflite[];" in (out / "tiny_student.h").read_text()


def test_multi_step_artifact_gives_one_model_per_step(export_models, tmp_path):
    """The quantize artifact layout of a student: `steps` in toolkit.json, files under step<k>/."""
    from toolkit.artifacts import read_manifest
    from toolkit.deploy.export import export_all

    run = tmp_path / "run"
    steps = {}
    for k, key in enumerate(["student", "every"]):
        (run / f"step{k}").mkdir(parents=True)
        shutil.copy(export_models[key], run / f"step{k}" / "model_int8_qdq.onnx")
        steps[str(k)] = {"files": {"qdq_onnx": f"step{k}/model_int8_qdq.onnx"}, "timestep": 900 - 500 * k}
    write_manifest(run, "quantized", steps=steps)
    reports = export_all(run, "native", tmp_path / "all", name="stu")
    assert [r["name"] for r in reports] == ["stu_step0", "stu_step1"]
    assert sorted(read_manifest(tmp_path / "all")["models"]) == ["stu_step0", "stu_step1"]
    assert (tmp_path / "all" / "stu_step1.c").read_text().count("tk_depthwise_conv2d_s8(") == 2
    only = export_all(run, "native", tmp_path / "one", name="stu", step=1)
    assert [r["name"] for r in only] == ["stu_step1"] and not (tmp_path / "one" / "stu_step0.c").exists()
    with pytest.raises(ValueError, match="step networks"):
        export(run, "native", tmp_path / "x")
    with pytest.raises(ValueError, match="no step 7"):
        export_all(run, "native", tmp_path / "x", step=7)


def test_wrong_artifact_and_bad_names_are_refused(export_models, tmp_path):
    run = tmp_path / "distilled_run"
    run.mkdir()
    write_manifest(run, "distilled")
    with pytest.raises(ValueError, match="'quantized'"):
        export(run, "native", tmp_path / "out")
    with pytest.raises(ValueError, match="C identifier"):
        export(export_models["student"], "native", tmp_path / "out", name="my-model")
    with pytest.raises(ValueError, match="unknown target"):
        export(export_models["student"], "no_such_board", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert toolkit_main(["export", "--model", str(tmp_path / "missing"), "--target", "native", "--out",
                         str(tmp_path / "o2")]) == 2


def test_model_too_large_for_board_is_refused(tmp_path):
    from fixtures_export import build_qdq_model

    big = build_qdq_model("student", tmp_path, size=64)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        export(big, "stm32f405", out, name="big")
    msg = str(err.value)
    assert "does not fit" in msg and "stm32f405" in msg and "largest layer" in msg.lower()
    assert "RAM" in msg and "budget" in msg
    assert not out.exists()  # nothing is written for a model that does not fit
    report = export(big, "stm32h743", out, name="big")
    fit = check_fit(report, "stm32h743")
    # RAM need = the arena the generated C declares + the model's input and output tensors (read from the
    # ONNX graph, not from the export's report)
    import onnx

    graph = onnx.load(big).graph
    io_bytes = sum(int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim]))
                   for v in (*graph.input, *graph.output))
    arena = int(re.search(r"#define BIG_ARENA_SIZE (\d+)u", (out / "big.h").read_text()).group(1))
    assert fit["peak_activation_bytes"] == arena + io_bytes


QEMU_MACHINES = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}


@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None,
                    reason="arm-none-eabi-gcc / qemu-system-arm not installed")
@pytest.mark.parametrize("cpu", sorted(QEMU_MACHINES))
def test_dsp_build_is_bit_exact_on_emulated_cortex_m(exported, export_models, export_test_inputs, tmp_path, cpu):
    """The real ACLE DSP path (SMLAD/SXTAB16), built for the core and run in QEMU with semihosting."""
    key = "every"
    gen = exported[key]
    elf = tmp_path / f"{key}_{cpu}.elf"
    res = subprocess.run(
        ["arm-none-eabi-gcc", *HOST_FLAGS, *ARM_CPUS[cpu], "--specs=rdimon.specs", "-T", str(HARNESS / "mps2.ld"),
         f"-I{TKENGINE / 'include'}", f"-I{gen}", f"-DTK_MODEL={key}_model", f'-DTK_MODEL_HEADER="{key}.h"',
         str(HARNESS / "mps2_startup.c"), str(HARNESS / "harness.c"), str(gen / f"{key}.c"),
         str(gen / f"{key}_weights.c"), *map(str, sorted((TKENGINE / "src").glob("*.c"))), "-o", str(elf)],
        capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    graph = ir.load_qdq(export_models[key])
    plan = json.loads((gen / f"{key}_plan.json").read_text())
    x = export_test_inputs[key][0]
    q_in = int8ref.quantize_input(graph, x)
    (tmp_path / "in.bin").write_bytes(q_in.tobytes())
    run = subprocess.run(
        ["qemu-system-arm", "-M", QEMU_MACHINES[cpu], "-nographic", "-monitor", "none", "-serial", "none",
         "-semihosting-config", "enable=on,target=native,arg=harness,arg=in.bin,arg=out.bin", "-kernel", str(elf)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    info = {k: int(v) for k, v in (kv.split("=") for kv in run.stdout.split())}
    assert info["dsp"] == 1 and info["rc"] == 0
    assert info["touched"] == info["arena_size"] == plan["arena_bytes"]
    got = np.frombuffer((tmp_path / "out.bin").read_bytes(), np.int8)
    np.testing.assert_array_equal(got, int8ref.run(graph, q_in).reshape(-1))


@needs_gcc
def test_nncf_qdq_model_exports_and_runs_bit_exact(export_test_inputs, tmp_path):
    """The quantize stage's format: NNCF (MIXED, per-tensor activations, quantized outputs) -> native
    FakeQuantize -> QDQ ONNX with uint8 activations and Q->DQ on float weights."""
    pytest.importorskip("nncf")
    import copy

    import torch

    from fixtures_export import _torch_models, student_inputs
    from toolkit.deploy import quantize as Q

    nncf = Q._nncf()  # NNCF with the quantize stage's eager fake-quantize ops (no C++ extension build)
    from nncf.quantization.advanced_parameters import QuantizationParameters

    student_cls, _ = _torch_models()
    torch.manual_seed(0)
    model = student_cls().eval()
    calib = torch.from_numpy(np.concatenate(student_inputs(8, seed=3)))
    advanced = nncf.AdvancedQuantizationParameters(
        overflow_fix=nncf.OverflowFix.DISABLE, quantize_outputs=True,
        activations_quantization_params=QuantizationParameters(per_channel=False))
    with torch.no_grad():
        qmodel = nncf.quantize(copy.deepcopy(model), nncf.Dataset([calib[i:i + 1] for i in range(8)]),
                               preset=nncf.QuantizationPreset.MIXED, subset_size=8, advanced_parameters=advanced)
    onnx_path = Q.export_qdq_onnx(qmodel, calib[:1], tmp_path / "nncf_student.onnx")
    graph = ir.load_qdq(onnx_path)
    # NNCF quantizes the Resize output on its own grid: the requantize moves before the upsample and the
    # upsample folds into the concat
    kinds = [op.kind for op in graph.ops]
    assert "upsample" not in kinds and kinds.index("requantize") < kinds.index("concat")
    assert int8ref.compare_with_onnxruntime(onnx_path, export_test_inputs["student"][:2], graph) <= 1
    export(onnx_path, "stm32f405", tmp_path / "gen", name="nncf_student")
    binary = _build(tmp_path / "gen", "nncf_student", tmp_path / "nncf_student_bin")
    q_in = int8ref.quantize_input(graph, export_test_inputs["student"][0])
    got, info = _run_c(binary, q_in, tmp_path)
    np.testing.assert_array_equal(got, int8ref.run(graph, q_in).reshape(-1))
    assert info["touched"] == info["arena_size"]


@needs_gcc
def test_quantize_artifact_exports_every_step_bit_exact(quantized_student_run, tmp_path):
    """`toolkit quantize` output (tiny 2-step student) -> `toolkit export` -> C, per step network."""
    from toolkit.artifacts import read_manifest
    from fixtures_export import student_inputs

    out = tmp_path / "gen"
    rc = toolkit_main(["export", "--model", str(quantized_student_run), "--target", "stm32f405", "--out", str(out),
                       "--name", "tiny"])
    assert rc == 0
    steps = read_manifest(quantized_student_run)["steps"]
    models = read_manifest(out, expect_stage="exported")["models"]
    assert sorted(models) == [f"tiny_step{k}" for k in sorted(steps, key=int)]
    for k, step in steps.items():
        name = f"tiny_step{k}"
        assert (out / f"{name}_tflite.c").exists()  # the artifact's .tflite, for TFLM users
        graph = ir.load_qdq(quantized_student_run / step["files"]["qdq_onnx"])
        binary = _build(out, name, tmp_path / name)
        size = graph.tensors[graph.input].shape[1]
        q_in = int8ref.quantize_input(graph, student_inputs(1, size=size, seed=int(k) + 5)[0])
        got, info = _run_c(binary, q_in, tmp_path)
        np.testing.assert_array_equal(got, int8ref.run(graph, q_in).reshape(-1))
        assert info["touched"] == info["arena_size"] == models[name]["arena_bytes"]


def test_fit_check_falls_back_to_int8_weights_when_int16_do_not_fit(export_models, tmp_path, monkeypatch):
    """int16 (wide) weights take twice the flash: on a board where only the int8 ones fit, export keeps them."""
    from toolkit.boards import load_board
    from toolkit.deploy import fit

    wide = export(export_models["every"], "qemu-m4", tmp_path / "wide", name="every")
    assert wide["wide_weights"]
    graph = ir.load_qdq(export_models["every"])
    int8_bytes = graph.weight_bytes()
    assert wide["weight_bytes"] > int8_bytes
    flash = load_board("qemu-m4").flash_bytes
    monkeypatch.setattr(fit, "FIRMWARE_FLASH_RESERVE", flash - (int8_bytes + wide["weight_bytes"]) // 2)
    small = export(export_models["every"], "qemu-m4", tmp_path / "small", name="every")
    assert not small["wide_weights"] and small["weight_bytes"] == int8_bytes
    assert "tk_conv2d_wide_s8" not in (tmp_path / "small" / "every.c").read_text()
