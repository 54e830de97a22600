"""Converts a GGUF file once into a cached Hugging Face folder and finds it again cheaply.

The cache folder is ``<root>/<stem>-<hash>`` where the hash covers the file's size, mtime and
the converter version; root is ``$RADIXLM_CACHE_DIR`` or ``~/.cache/radixlm``. The converter
writes into a temporary folder that is renamed into place, and a file lock makes a second
concurrent first start wait for the first instead of converting twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

# Bumped whenever the converter's output changes, so stale cache folders are not reused.
CONVERTER_VERSION = 2
# Written last by the converter: its presence marks a complete folder.
SOURCE_INFO_FILE = "radixlm_source.json"


def cache_root() -> str:
    return os.environ.get("RADIXLM_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "radixlm"
    )


def converted_dir_for(gguf_path: str) -> str:
    stat = os.stat(gguf_path)
    key = f"{stat.st_size}:{stat.st_mtime_ns}:{CONVERTER_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    stem = os.path.basename(gguf_path).removesuffix(".gguf")
    return os.path.join(cache_root(), f"{stem}-{digest}")


def is_complete(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, SOURCE_INFO_FILE))


def ensure_converted(gguf_path: str) -> str:
    """Returns the converted folder for ``gguf_path``, converting it first if needed."""
    final_dir = converted_dir_for(gguf_path)
    if is_complete(final_dir):
        return final_dir
    root = os.path.dirname(final_dir)
    os.makedirs(root, exist_ok=True)
    with open(final_dir + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(final_dir):  # another process converted it while we waited
            return final_dir
        tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(final_dir)}.tmp-", dir=root)
        try:
            # A subprocess: the tokenizer conversion imports torch, our caller must not.
            proc = subprocess.run(
                [sys.executable, "-m", "radixlm.runtime.model_loader.convert_gguf"]
                + [gguf_path, tmp_dir],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"converting {gguf_path} failed (exit {proc.returncode}):\n"
                    f"{proc.stderr[-4000:]}"
                )
            if os.path.isdir(final_dir):  # an incomplete leftover from a killed run
                shutil.rmtree(final_dir)
            os.chmod(tmp_dir, 0o755)  # mkdtemp makes it private; the cache is shared
            os.rename(tmp_dir, final_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir
