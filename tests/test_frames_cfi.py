"""CFA rules from .debug_frame agree with the frame setup decoded from the instructions themselves."""

from __future__ import annotations

from conftest import build_fixture
from goprobe import GoBinary

RSP, RIP = 7, 16


def test_cfa_rules_match_the_frame_setup(go_version, build_mode):
    binary = build_fixture("kinds", go_version, build_mode)
    checked = 0
    with GoBinary(binary, use_cache=False) as b:
        for name in b.function_names():
            if not name.startswith("main.") or name.endswith(".abi0"):
                continue
            fns = b.functions(name)
            if not fns:
                continue
            fn = fns[0]
            code = b.code.for_function(fn)
            entry = b.frame_rule(fn.entry)
            assert (entry.cfa_reg, entry.cfa_offset) == (RSP, 8), name
            assert entry.saved_offset(RIP) == -8, name
            # After PUSH BP; MOV BP, SP; SUB SP, N the CFA is SP + frame + 8 for the rest of the body
            # (until an epilogue): check the first instruction after the setup.
            insns = [i for i in b.code.instructions(fn.low, fn.high) if i[0] >= code.prologue_end]
            setup_end = None
            for addr, size, mnem, ops in insns[:4]:
                if mnem == "sub" and ops.startswith("rsp,"):
                    setup_end = addr + size
                    break
            if setup_end is None:
                continue
            body = b.frame_rule(setup_end)
            assert body.cfa_reg == RSP and body.cfa_offset == code.frame_size + 8, (name, body, code.frame_size)
            checked += 1
    assert checked > 10
