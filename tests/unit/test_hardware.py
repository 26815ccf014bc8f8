"""What the machine runs fast, as it reports it: bf16 on a CPU without bf16 instructions is a one-line warning naming
the faster setting (vae.training.hardware)."""

import pytest

from vae.training import hardware

XEON = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma sha_ni\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("cpuinfo,bf16", [(XEON, True), (EPYC, False), (GRAVITON, True)], ids=["xeon", "epyc", "arm"])
def test_the_cpu_s_bf16_instructions_are_read_from_what_it_reports(tmp_path, cpuinfo, bf16):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    features = hardware.cpu_features(path)
    assert bool(features & hardware.BF16_FLAGS) is bf16
    assert hardware.cpu_features(tmp_path / "none") is None or hardware.cpu_features(tmp_path / "none") == set()


def test_bf16_on_a_cpu_without_it_is_a_one_line_warning_naming_the_faster_setting(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_features", lambda: {"avx2", "fma"})
    advice = hardware.precision_advice("bf16-mixed", on_cpu=True)
    assert advice is not None and "\n" not in advice and advice.endswith("use --trainer.precision 32 here")
    assert hardware.precision_advice("bf16-true", on_cpu=True) is not None
    assert hardware.precision_advice("bf16-mixed", on_cpu=False) is None  # a GPU runs it
    assert hardware.precision_advice("32-true", on_cpu=True) is None
    assert hardware.precision_advice(None, on_cpu=True) is None
    monkeypatch.setattr(hardware, "cpu_features", lambda: {"avx512_bf16"})
    assert hardware.precision_advice("bf16-mixed", on_cpu=True) is None  # it has the instructions
    monkeypatch.setattr(hardware, "cpu_features", lambda: None)
    assert hardware.precision_advice("bf16-mixed", on_cpu=True) is None  # it cannot tell: no warning
