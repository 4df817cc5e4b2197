"""No value is ever guessed: every variable goprobe reports in the fidelity fixture is the value the program
itself recorded, or says it is unavailable and why — never a wrong value that looks real.

The fixture parks goroutines in functions whose variables the optimiser keeps only in part (the shapes for
which the Go compiler emits wrong DWARF locations, and variables whose last use is before the park, whose
memory the runtime may already have reused). Every release, both build modes, both backends.
"""

from __future__ import annotations

import pytest

from conftest import build_fixture
from ebpf_support import REASON
from goprobe.testing.fidelity import fidelity_verdicts


@pytest.mark.parametrize("backend", ["interp", "ebpf"])
def test_every_value_is_right_or_unavailable(go_version, build_mode, backend):
    if backend == "ebpf" and REASON is not None:
        pytest.skip(REASON)
    counts, wrong = fidelity_verdicts(build_fixture("fidelity", go_version, build_mode), backend)
    assert not wrong, "\n".join(wrong)
    # Not everything may be given up: most recorded variables are live at the park, and a build without
    # optimisation keeps every one where its debug info says.
    assert counts["right"] > counts["unavailable"], counts
    if build_mode != "opt":
        assert counts["unavailable"] == 0, counts
