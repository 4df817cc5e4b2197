"""The process layer: memory sources (live process, core file, test model) and pausing a live Go process."""

from goprobe.process.core import CoreFile
from goprobe.process.memory import Memory, ProcessMemory, TestMemory
from goprobe.process.ptrace import PausedProcess, ThreadState, pause

__all__ = ["CoreFile", "Memory", "PausedProcess", "ProcessMemory", "TestMemory", "ThreadState", "pause"]
