"""Byte-level dataset over the Python standard library sources of the running interpreter.

Each ``*.py`` file under ``sysconfig.get_paths()["stdlib"]`` (test directories and site-packages
left out) is one document: its raw bytes are token ids 0..255, and documents are joined by
``EOS_ID`` (256), so a model learns where a file ends. Files are split into train and held-out
sets by a hash of their path relative to the stdlib root, so the split is the same on every
machine and does not depend on the order of the directory walk.

Shape legend: b batch, l seqlen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import sysconfig

import numpy as np

EOS_ID = 256
VOCAB_SIZE = 257  # 256 byte values + EOS

# Directory names skipped anywhere under the stdlib root: test suites (much of their text is
# generated data, and the brief asks for library code), installed third-party packages, caches.
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def python_description() -> str:
    """Where the data came from, for the model card: version, implementation, platform."""
    import platform

    return (f"{platform.python_implementation()} {platform.python_version()} standard library at "
            f"{stdlib_root()} ({sys.platform}, {platform.machine()})")


def is_heldout(relpath: str, heldout_fraction: float) -> bool:
    """Deterministic split: a file is held out when the hash of its relative path falls below the
    fraction. Uses '/' separators so the split is the same on every OS."""
    key = relpath.replace(os.sep, "/").encode("utf-8")
    bucket = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") / 2.0**64
    return bucket < heldout_fraction


def list_sources(root: str | None = None) -> list[str]:
    """Relative paths of the ``*.py`` files under `root` (default: the stdlib), sorted."""
    root = stdlib_root() if root is None else root
    if not os.path.isdir(root):
        raise FileNotFoundError(f"source directory {root!r} does not exist")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def _join(root: str, relpaths: list[str]) -> np.ndarray:
    """Concatenates the files' bytes as uint16 token ids, each file followed by EOS_ID."""
    parts = []
    eos = np.array([EOS_ID], np.uint16)
    for rel in relpaths:
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        if data:
            parts.append(np.frombuffer(data, np.uint8).astype(np.uint16))
            parts.append(eos)
    if not parts:
        return np.zeros((0,), np.uint16)
    return np.concatenate(parts)


@dataclasses.dataclass
class ByteCorpus:
    """The train and held-out token streams (uint16 ids in [0, 257)) and which files made them."""

    root: str
    train_files: list[str]
    heldout_files: list[str]
    train: np.ndarray  # [n_train] uint16
    heldout: np.ndarray  # [n_heldout] uint16

    @classmethod
    def load(cls, root: str | None = None, heldout_fraction: float = 0.05, max_files: int | None = None):
        root = stdlib_root() if root is None else root
        files = list_sources(root)
        if max_files is not None:
            files = files[:max_files]
        if not files:
            raise ValueError(f"no *.py files found under {root!r}")
        held = [f for f in files if is_heldout(f, heldout_fraction)]
        train = [f for f in files if not is_heldout(f, heldout_fraction)]
        if not held or not train:
            raise ValueError(f"the split of {len(files)} files at fraction {heldout_fraction} left "
                             f"{len(train)} train and {len(held)} held-out files; both must be non-empty")
        return cls(root, train, held, _join(root, train), _join(root, held))

    def summary(self) -> dict:
        return {
            "root": self.root,
            "train_files": len(self.train_files),
            "heldout_files": len(self.heldout_files),
            "train_bytes": int(np.sum(self.train != EOS_ID)),
            "heldout_bytes": int(np.sum(self.heldout != EOS_ID)),
        }


def sample_batch(stream: np.ndarray, batch: int, seqlen: int, rng: np.random.Generator) -> np.ndarray:
    """Random windows of seqlen + 1 tokens: inputs are [:, :-1], targets [:, 1:]. Returns [b, l + 1] int32."""
    if stream.shape[0] < seqlen + 1:
        raise ValueError(f"the stream has {stream.shape[0]} tokens, fewer than seqlen + 1 = {seqlen + 1}")
    starts = rng.integers(0, stream.shape[0] - seqlen, size=batch)
    idx = starts[:, None] + np.arange(seqlen + 1)[None, :]
    return stream[idx].astype(np.int32)


def eval_windows(stream: np.ndarray, seqlen: int, max_tokens: int | None = None) -> np.ndarray:
    """Non-overlapping windows of seqlen + 1 tokens covering the stream (consecutive windows share one
    token, so every token but the first is a target exactly once). Returns [n, l + 1] int32; the last
    partial window is dropped."""
    n = stream.shape[0] if max_tokens is None else min(stream.shape[0], max_tokens + 1)
    count = (n - 1) // seqlen
    if count < 1:
        raise ValueError(f"the held-out stream has {n} tokens, fewer than seqlen + 1 = {seqlen + 1}")
    idx = np.arange(count)[:, None] * seqlen + np.arange(seqlen + 1)[None, :]
    return stream[idx].astype(np.int32)
