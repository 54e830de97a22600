"""Incremental detokenization and stop-string trimming (pure, with a byte-splitting decoder)."""

from __future__ import annotations

from radixlm.runtime.incremental_detokenizer import DecodeState


class ByteDecoder:
    """Each token is one UTF-8 byte, like byte fallback in a byte-level BPE."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def feed(state: DecodeState, text: str, finish_at_end: bool = True) -> list[str]:
    shown = []
    data = list(text.encode())
    for i, b in enumerate(data):
        final = finish_at_end and i == len(data) - 1
        state.append([b], final=final)
        shown.append(state.visible_text(final))
    return shown


def test_multibyte_characters_are_never_split():
    shown = feed(DecodeState(ByteDecoder()), "héllo ✓")
    assert shown[-1] == "héllo ✓"
    assert all("\ufffd" not in s for s in shown)
    assert all(shown[-1].startswith(s) for s in shown)


def test_stop_string_is_trimmed_and_never_leaks_while_streaming():
    shown = feed(DecodeState(ByteDecoder(), stop=("STOP",)), "abc STOP xyz", finish_at_end=True)
    assert all("S" not in s for s in shown)
    assert shown[-1] == "abc "


def test_no_stop_trim_keeps_the_stop_string():
    state = DecodeState(ByteDecoder(), stop=("END",), no_stop_trim=True)
    assert feed(state, "xEND")[-1] == "xEND"


def test_partial_stop_prefix_is_released_when_it_does_not_complete():
    state = DecodeState(ByteDecoder(), stop=("abc",))
    shown = feed(state, "xab", finish_at_end=False)
    assert shown[-1] == "x"
    state.append(list(b"d"))
    assert state.visible_text(False) == "xabd"
