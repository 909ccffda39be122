"""Spec files as editors write them: a byte-order mark or CRLF line ends change nothing."""
import pytest

from netc.compiler.errors import SpecError
from netc.compiler.sources import read_spec_file

SPEC = "input x : [3]\ntarget t : [1]\ny = dense(x, 1)\nloss = mse(y, t)\n"


@pytest.mark.parametrize("prefix, newline", [(b"\xef\xbb\xbf", b"\n"), (b"\xef\xbb\xbf", b"\r\n"), (b"", b"\r\n")])
def test_bom_and_crlf_read_as_plain_text(tmp_path, prefix, newline):
    p = tmp_path / "s.net"
    p.write_bytes(prefix + SPEC.encode().replace(b"\n", newline))
    assert read_spec_file(p) == SPEC


def test_bom_spec_checks_like_plain(tmp_path):
    import netc
    p = tmp_path / "s.net"
    p.write_bytes(b"\xef\xbb\xbf" + SPEC.encode())
    assert netc.compile(str(p)) is not None


def test_bom_in_the_middle_is_still_an_error_at_its_place(tmp_path):
    p = tmp_path / "s.net"
    p.write_bytes(SPEC.encode() + b"\xef\xbb\xbfy2 = y\n")
    with pytest.raises(SpecError) as e:
        netc_compile(p)
    assert ":5:1:" in str(e.value) and "\\ufeff" in str(e.value)


def netc_compile(p):
    import netc
    return netc.compile(str(p))
