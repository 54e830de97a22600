"""radixlm: a structured-generation language and serving runtime.

    import radixlm as rl

    @rl.function
    def qa(s, question):
        s += rl.user(question)
        s += rl.assistant(rl.gen("answer", max_tokens=64))

    rl.set_default_backend(rl.RuntimeEndpoint("http://127.0.0.1:30000"))
    print(qa.run(question="What is the capital of France?")["answer"])

Importing this package loads neither torch nor the runtime; `Engine` and `Runtime` load what
they need when constructed.
"""

from radixlm.api import (
    assistant,
    assistant_begin,
    assistant_end,
    flush_cache,
    gen,
    gen_int,
    gen_string,
    get_server_info,
    image,
    select,
    set_default_backend,
    system,
    system_begin,
    system_end,
    user,
    user_begin,
    user_end,
)
from radixlm.backend.engine import Engine
from radixlm.backend.http_client import BackendError
from radixlm.backend.launched_server import Runtime
from radixlm.backend.openai_backend import OpenAI
from radixlm.backend.runtime_endpoint import RuntimeEndpoint
from radixlm.chat_template import ChatTemplate
from radixlm.chat_templates import get_chat_template, register_chat_template
from radixlm.choices import (
    greedy_token_selection,
    token_length_normalized,
    unconditional_likelihood_normalized,
)
from radixlm.function import function
from radixlm.global_config import global_config
from radixlm.program_state import ProgramState, ProgramStateGroup
from radixlm.stream_executor import ProgramError

__all__ = [
    "BackendError",
    "ChatTemplate",
    "Engine",
    "OpenAI",
    "ProgramError",
    "ProgramState",
    "ProgramStateGroup",
    "Runtime",
    "RuntimeEndpoint",
    "assistant",
    "assistant_begin",
    "assistant_end",
    "flush_cache",
    "function",
    "gen",
    "gen_int",
    "gen_string",
    "get_chat_template",
    "get_server_info",
    "global_config",
    "greedy_token_selection",
    "image",
    "register_chat_template",
    "select",
    "set_default_backend",
    "system",
    "system_begin",
    "system_end",
    "token_length_normalized",
    "unconditional_likelihood_normalized",
    "user",
    "user_begin",
    "user_end",
]
