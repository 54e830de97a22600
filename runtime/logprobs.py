"""Log-probabilities of given tokens under the raw model distribution (``log_softmax(logits)``).

Used for the sampled tokens of a decode step and for prompt (input) logprobs. These are the values
SGLang and OpenAI report: before temperature, penalties, masks or top-k/top-p filtering.
"""

from __future__ import annotations

import torch

TopLogprobs = list[tuple[int, float]]


def token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, top_k: int = 0
) -> tuple[list[float], list[TopLogprobs]]:
    """Logprob of ``token_ids[i]`` under ``log_softmax(logits[i])`` for every row ``i``.

    ``logits``: (num_rows, vocab) raw logits, any float dtype. ``token_ids``: (num_rows,) ids.
    With ``top_k > 0`` also returns, per row, the ``top_k`` most likely (token id, logprob) pairs,
    most likely first; otherwise one empty list per row.
    """
    num_rows, vocab = logits.shape
    assert token_ids.shape == (num_rows,), (token_ids.shape, num_rows)
    if num_rows == 0:
        return [], []
    logits = logits.float()
    # One fused pass; cheaper on CPU than logsumexp, which allocates and walks the data twice.
    logprobs = torch.log_softmax(logits, dim=-1)  # (num_rows, vocab)
    index = token_ids.to(device=logits.device, dtype=torch.long).view(num_rows, 1)
    chosen = logprobs.gather(1, index).view(num_rows).tolist()
    if top_k <= 0:
        return chosen, [[] for _ in range(num_rows)]
    top_values, top_ids = logprobs.topk(min(top_k, vocab), dim=-1)  # (num_rows, k), sorted
    top = [
        list(zip(row_ids, row_values, strict=True))
        for row_ids, row_values in zip(top_ids.tolist(), top_values.tolist(), strict=True)
    ]
    return chosen, top
