"""Roles and chat templates: rendered text, messages(), stop strings, template errors."""

from __future__ import annotations

import pytest

import radixlm as rl


@rl.function
def chat(s, question):
    s += rl.system("You are terse.")
    s += rl.user(question)
    s += rl.assistant(rl.gen("answer", max_tokens=8))
    with s.user():
        s += "Thanks. And "
        s += "again?"
    with s.assistant():
        s += rl.gen("second", max_tokens=8)


def test_chatml_rendering_messages_and_stops(fake, endpoint):
    fake.complete = lambda text, params: " Paris.<|im_end|>junk"
    state = chat.run("Capital of France?", backend=endpoint)
    expected_text = (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\n Paris.<|im_end|>\n"
        "<|im_start|>user\nThanks. And again?<|im_end|>\n"
        "<|im_start|>assistant\n Paris.<|im_end|>\n"
    )
    assert state.text() == expected_text
    assert state.messages() == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        # Message contents are stripped of leading whitespace.
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Thanks. And again?"},
        {"role": "assistant", "content": "Paris."},
    ]
    first, second = fake.generate_bodies()
    assert first["text"].endswith("<|im_start|>assistant\n")
    assert first["sampling_params"]["stop"] == ["<|im_end|>"]
    assert second["text"] == expected_text[: expected_text.rindex("<|im_start|>assistant\n") + 22]


def test_begin_end_markers_and_state_role_methods(fake, endpoint):
    @rl.function
    def markers(s):
        s += rl.user_begin() + "hi" + rl.user_end()
        s.assistant("hello")
        s += rl.system_begin() + "late system" + rl.system_end()
        s += rl.assistant_begin() + rl.assistant_end()

    state = markers.run(backend=endpoint)
    assert [m["role"] for m in state.messages()] == ["user", "assistant", "system", "assistant"]
    assert state.messages()[3]["content"] == ""
    assert fake.generate_bodies() == []


def test_default_system_prompt_is_inserted_before_the_first_non_system_role(fake):
    endpoint = rl.RuntimeEndpoint(fake.url, chat_template_name="qwen")

    @rl.function
    def no_system(s):
        s += rl.user("hi")

    msgs = no_system.run(backend=endpoint).messages()
    assert msgs == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "hi"},
    ]


def test_llama3_template_picked_from_model_path(fake):
    fake.model_info = {"model_path": "meta-llama/Meta-Llama-3-8B-Instruct"}
    endpoint = rl.RuntimeEndpoint(fake.url)
    fake.clear()
    chat.run("q", backend=endpoint).sync()
    body = fake.generate_bodies()[0]
    assert body["text"].startswith("<|start_header_id|>system<|end_header_id|>\n\nYou are terse.")
    assert body["sampling_params"]["stop"] == ["<|eot_id|>"]


def test_llama2_style_folds_the_system_prompt_into_the_first_user_turn(fake):
    endpoint = rl.RuntimeEndpoint(fake.url, chat_template_name="llama-2-chat")

    @rl.function
    def turn(s):
        s += rl.system("Be nice.")
        s += rl.user("hi")

    assert turn.run(backend=endpoint).text() == "[INST] <<SYS>>\nBe nice.\n<</SYS>>\n\nhi [/INST]"


def test_nested_or_mismatched_roles_fail_the_program(fake, endpoint):
    @rl.function
    def nested(s):
        with s.user():
            s += rl.assistant("no")

    with pytest.raises(rl.ProgramError, match="cannot nest"):
        nested.run(backend=endpoint).text()

    @rl.function
    def mismatched(s):
        s += rl.user_begin() + "x" + rl.assistant_end()

    with pytest.raises(rl.ProgramError, match="open role"):
        mismatched.run(backend=endpoint).sync()


def test_images_are_sent_as_image_data_and_shown_in_messages(fake, endpoint, tmp_path):
    path = tmp_path / "pixel.png"
    path.write_bytes(b"\x89PNG fake")

    @rl.function
    def look(s):
        s += rl.user(rl.image(str(path)) + "What is this?")
        s += rl.assistant(rl.gen("answer", max_tokens=4))

    state = look.run(backend=endpoint)
    state.sync()
    [body] = fake.generate_bodies()
    assert body["image_data"] == "iVBORyBmYWtl"
    assert "<image>What is this?" in body["text"]
    content = state.messages()[0]["content"]
    assert content[0] == {"type": "text", "text": "<image>What is this?"}
    assert content[1]["image_url"]["url"] == "data:image/jpeg;base64,iVBORyBmYWtl"

    @rl.function
    def two_images(s):
        s += rl.image(b"a") + rl.image(b"b") + rl.gen("x")

    with pytest.raises(rl.ProgramError, match="one image per request"):
        two_images.run(backend=endpoint).text()
