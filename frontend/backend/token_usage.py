"""Token counts summed over every response a backend received (from each `meta_info`)."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenUsageSnapshot:
    num_requests: int
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int

    @property
    def computed_prompt_tokens(self) -> int:
        """Prompt tokens the server had to prefill (not found in its prefix cache)."""
        return self.prompt_tokens - self.cached_tokens

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


class TokenUsage:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = [0, 0, 0, 0]

    def record(self, meta_info: dict) -> None:
        with self._lock:
            self._counts[0] += 1
            self._counts[1] += int(meta_info.get("prompt_tokens") or 0)
            self._counts[2] += int(meta_info.get("cached_tokens") or 0)
            self._counts[3] += int(meta_info.get("completion_tokens") or 0)

    def snapshot(self) -> TokenUsageSnapshot:
        with self._lock:
            return TokenUsageSnapshot(*self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts = [0, 0, 0, 0]
