"""runtime/device.py: which device `auto` picks, which precision `auto` picks and why (hardware mocked), and the CPU
thread count a run uses and records."""

import json

import pytest
import torch
from helpers import tiny_config

import ddpm.runtime.device as device_module
from ddpm.common.errors import UserError
from ddpm.launch import train_run
from ddpm.runtime.device import Precision, cpu_threads, resolve_device, resolve_precision

CUDA, CPU, MPS = torch.device("cuda"), torch.device("cpu"), torch.device("mps")


@pytest.fixture
def gpu(monkeypatch):
    """A mocked CUDA GPU of a given compute capability; torch.cuda.is_bf16_supported() says True on all of them,
    as it does on a real V100 or T4 (emulated bf16), so the decision must not rest on it."""
    def set_capability(major: int, minor: int) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    return set_capability


@pytest.mark.parametrize("capability, expected", [
    ((9, 0), Precision("bf16", "native on CUDA capability 9.0")),  # H100
    ((8, 0), Precision("bf16", "native on CUDA capability 8.0")),  # A100
    ((8, 6), Precision("bf16", "native on CUDA capability 8.6")),  # RTX 30xx
    ((7, 5), Precision("fp16", "CUDA capability 7.5 has no native bf16")),  # T4
    ((7, 0), Precision("fp16", "CUDA capability 7.0 has no native bf16")),  # V100
    ((6, 1), Precision("fp16", "CUDA capability 6.1 has no native bf16")),  # P40
])
def test_auto_precision_on_cuda_follows_the_compute_capability(gpu, capability, expected):
    gpu(*capability)
    assert resolve_precision("auto", CUDA) == expected


@pytest.mark.parametrize("native, expected", [(True, "bf16 (native on this CPU)"),
                                              (False, "fp32 (no native bf16 here)")])
def test_auto_precision_on_cpu_follows_native_bf16(monkeypatch, native, expected):
    monkeypatch.setattr(device_module, "cpu_native_bf16", lambda: native)
    assert str(resolve_precision("auto", CPU)) == expected


def test_auto_precision_on_mps_is_fp32_and_asked_precisions_are_kept(monkeypatch, gpu):
    monkeypatch.setattr(device_module, "cpu_native_bf16", lambda: False)
    assert resolve_precision("auto", MPS) == ("fp32", "auto on Apple MPS")
    for device in (CPU, MPS):
        assert resolve_precision("fp16", device) == ("fp16", "as asked")
        assert resolve_precision("fp32", device) == ("fp32", "as asked")
        assert resolve_precision("bf16", device) == ("bf16", "as asked; emulated here, slow")
    gpu(7, 0)
    assert resolve_precision("bf16", CUDA) == ("bf16", "as asked; emulated here, slow")
    gpu(8, 0)
    assert resolve_precision("bf16", CUDA) == ("bf16", "as asked")
    with pytest.raises(UserError, match="unknown precision 'fp8'; choose auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU)


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto").type == expected


def test_mps_asked_for_without_one_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="no usable Apple MPS"):
        resolve_device("mps")


def test_cpu_threads_sets_and_restores_the_count():
    before = torch.get_num_threads()
    with cpu_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(0) as n:  # torch's default: untouched
        assert n == before


def test_a_run_with_one_thread_records_it(tmp_path, capsys):
    before = torch.get_num_threads()
    train_run(tiny_config(steps=2, log_every=1, threads=1), tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["threads"] for r in records] == [1, 1]
    assert "fp32 (as asked), 1 CPU thread(s)," in capsys.readouterr().out  # the start-up line
    assert torch.get_num_threads() == before  # the library call leaves the process as it found it
