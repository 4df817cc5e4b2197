"""What instruction decoding found out about a function (kept light: it is cached and unpickled)."""

from __future__ import annotations

import attrs


@attrs.frozen(slots=True)
class FunctionCode:
    entry: int
    end: int
    prologue_end: int
    returns: tuple[int, ...]
    has_frame_pointer: bool
    frame_size: int  # bytes the function reserves below its return address, frame pointer included
    has_stack_check: bool
    call_returns: tuple[int, ...] = ()  # the return address of every call instruction
