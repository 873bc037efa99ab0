"""How `scripts/llama_server.sh` builds llama-cpp-python: the instruction sets come from the CPU's
own flags (an AVX-512 wheel dies with SIGILL on an AVX2-only CPU), AMX is always off (its weight
repacking segfaults), and the wheel folder is named after the instruction set, so a `.gravity/`
carried to another kind of CPU builds again instead of reusing a wheel that cannot run there."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llama_server.sh"

ZEN3 = ("fpu sse sse2 pni ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand "
        "bmi1 avx2 bmi2 vaes vpclmulqdq")
SAPPHIRE_RAPIDS = ("fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f "
                   "avx512dq avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16 avx_vnni "
                   "amx_bf16 amx_tile amx_int8")


def build_for(tmp_path: Path, flags: str, **env: str) -> tuple[str, set[str]]:
    cpuinfo = tmp_path / f"cpuinfo-{abs(hash(flags))}"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: test\nflags\t\t: {flags}\n\n")
    result = subprocess.run(
        ["bash", str(SCRIPT), "--print-build", "unused-venv"], capture_output=True, text=True,
        env={**os.environ, "LLAMA_CPUINFO": str(cpuinfo), **env}, check=True, timeout=30)
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines())
    return Path(lines["wheels"]).name, set(lines["CMAKE_ARGS"].split())


def test_an_avx2_cpu_gets_a_wheel_without_avx512(tmp_path: Path) -> None:
    folder, args = build_for(tmp_path, ZEN3)
    assert {"-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
            "-DGGML_BMI2=ON"} <= args
    assert {"-DGGML_AVX512=OFF", "-DGGML_AVX512_VNNI=OFF", "-DGGML_AVX512_BF16=OFF",
            "-DGGML_AVX_VNNI=OFF"} <= args
    assert not any(a.startswith("-DGGML_AMX") and a.endswith("=ON") for a in args)
    assert folder == "x86_64-sse4_2-avx-f16c-fma-avx2-bmi2"


def test_an_amx_cpu_gets_avx512_and_never_amx(tmp_path: Path) -> None:
    folder, args = build_for(tmp_path, SAPPHIRE_RAPIDS)
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VBMI=ON", "-DGGML_AVX512_VNNI=ON",
            "-DGGML_AVX512_BF16=ON", "-DGGML_AVX_VNNI=ON"} <= args
    assert {"-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"} <= args
    assert "-DGGML_NATIVE=ON" not in args
    assert folder != build_for(tmp_path, ZEN3)[0], "one wheel folder for two instruction sets"


def test_cmake_args_from_the_environment_win_and_name_their_own_folder(tmp_path: Path) -> None:
    folder, args = build_for(tmp_path, ZEN3, LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_CUDA=ON")
    assert args == {"-DGGML_NATIVE=ON", "-DGGML_CUDA=ON"}
    assert folder.startswith("custom-")
    other, _ = build_for(tmp_path, ZEN3, LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON")
    assert other.startswith("custom-") and other != folder


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo")
def test_this_machine_gets_only_what_its_cpu_lists() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--print-build", "unused-venv"],
                            capture_output=True, text=True, check=True, timeout=30)
    args = result.stdout.split("CMAKE_ARGS: ", 1)[1].split()
    flags = next((line.split(":", 1)[1].split() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), [])
    if os.uname().machine != "x86_64" or not flags:
        assert "-DGGML_NATIVE=ON" in args
        return
    assert ("-DGGML_AVX512=ON" in args) == ("avx512f" in flags)
    assert ("-DGGML_AVX2=ON" in args) == ("avx2" in flags)
