"""The kernel loader skips, without compiling, a kernel whose CPU flags this machine lacks."""

from __future__ import annotations

import pytest

from radixlm.kernels import cpu_extension


@pytest.mark.skipif(not cpu_extension.host_cpu_flags(), reason="no /proc/cpuinfo here")
def test_a_kernel_needing_a_missing_flag_is_not_built(monkeypatch):
    def fail(*args):
        raise AssertionError("tried to build")

    monkeypatch.setattr(cpu_extension, "_build_or_load", fail)
    source = '#error "never compiled"'
    assert cpu_extension.load_cpu_extension("t", source, ("f",), ("no_such_flag",)) is None
    present = next(iter(cpu_extension.host_cpu_flags()))
    with pytest.raises(AssertionError, match="tried to build"):
        cpu_extension.load_cpu_extension("t", source, ("f",), (present,))
