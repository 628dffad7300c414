"""How the service process ends after its shutdown, with and without CUDA initialised."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRAM = """
import sys, torch
from nes2net_stream.service import server
if sys.argv[1] == "cuda":  # what a GPU scorer looks like at the end of its shutdown
    torch.cuda.is_initialized = lambda: True
    torch.cuda.synchronize = lambda: sys.stdout.write(" (device synchronized)")
sys.stdout.write("drained")  # block-buffered (a pipe), not yet written
server.end_process_after_cuda()
print(" and returned")
"""


def run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_a_process_that_used_cuda_flushes_and_ends_without_interpreter_teardown():
    proc = run("cuda")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "drained (device synchronized)"  # flushed; nothing after the exit


def test_a_process_without_cuda_returns_and_exits_normally():
    proc = run("cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "drained and returned\n"
