"""Finding model files (torch-free) and loading their weights (torch, in ``weights``)."""

from radixlm.runtime.model_loader.resolve import (
    KNOWN_DUMMY_MODELS,
    ModelNotFoundError,
    ResolvedModel,
    resolve_model,
)

__all__ = ["KNOWN_DUMMY_MODELS", "ModelNotFoundError", "ResolvedModel", "resolve_model"]
