"""The process layer: memory sources (live process, core file, test model) and pausing a live Go process."""

from goprobe.errors import (
    CoreFileError,
    ProcessError,
    ProcessExitedError,
    ProcessNotFoundError,
    ProcessPermissionError,
)
from goprobe.process.core import CoreFile
from goprobe.process.memory import Memory, ProcessMemory, TestMemory
from goprobe.process.ptrace import PausedProcess, ThreadState, pause, run_paused

__all__ = [
    "CoreFile", "CoreFileError", "Memory", "PausedProcess", "ProcessError", "ProcessExitedError", "ProcessMemory",
    "ProcessNotFoundError", "ProcessPermissionError", "TestMemory", "ThreadState", "pause",
    "run_paused",
]
