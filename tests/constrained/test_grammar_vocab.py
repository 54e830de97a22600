"""runtime/grammar_vocab.py: the byte table of the real tokenizer, and the SentencePiece path."""

from __future__ import annotations

from radixlm.runtime.grammar_vocab import gpt2_unicode_to_byte, token_to_bytes


def test_bytes_decode_like_the_tokenizer(vocab, hf_tokenizer) -> None:
    assert vocab.vocab_size == len(hf_tokenizer) == len(vocab.token_bytes)
    assert vocab.eos_token_ids == (hf_tokenizer.eos_token_id,)
    checked = 0
    for token_id in range(0, len(vocab.token_bytes), 37):
        data = vocab.token_bytes[token_id]
        if data is None:
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a partial UTF-8 token: the tokenizer shows U+FFFD for it
        assert hf_tokenizer.decode([token_id]) == text, token_id
        checked += 1
    assert checked > 1000


def test_special_tokens_are_none_and_first_bytes_are_tokens(vocab, hf_tokenizer) -> None:
    for name in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert vocab.token_bytes[hf_tokenizer.convert_tokens_to_ids(name)] is None
    single = {data[0] for data in vocab.token_bytes if data is not None and len(data) == 1}
    first = {data[0] for data in vocab.token_bytes if data}
    # The outlines backend's fast forced-byte test relies on this (bytes like 0xFF never occur).
    assert first <= single and len(single) > 200


def test_sentencepiece_spelling() -> None:
    table = gpt2_unicode_to_byte()
    assert token_to_bytes("<0x0A>", byte_level=False, unicode_to_byte=table) == b"\n"
    assert token_to_bytes("\u2581the", byte_level=False, unicode_to_byte=table) == b" the"
    assert token_to_bytes("Ġthe", byte_level=True, unicode_to_byte=table) == b" the"
    assert token_to_bytes("Ċ", byte_level=True, unicode_to_byte=table) == b"\n"
