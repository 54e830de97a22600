"""Process-wide settings of the language (SGLang's `global_config`, same field names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from radixlm.backend.base import BaseBackend


@dataclass
class GlobalConfig:
    # 0: quiet; 2: print each program's final text after it runs.
    verbosity: int = 0
    # The backend used when `run`/`run_batch` get none; set with `set_default_backend`.
    default_backend: BaseBackend | None = None
    # Detokenization flags sent in every gen's sampling params.
    skip_special_tokens_in_output: bool = True
    spaces_between_special_tokens_in_out: bool = True
    # Trace `run_batch` programs and send their shared prefix once before the batch.
    enable_precache_with_tracing: bool = True
    # Let `join(mode="concate_and_append")` use the backend's KV concatenation when it has one.
    enable_parallel_encoding: bool = True


global_config = GlobalConfig()
