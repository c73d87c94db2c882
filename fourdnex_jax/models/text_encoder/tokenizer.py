"""UMT5 tokenisation from a checkpoint's own tokenizer folder (no network), as Wan's pipeline calls it.

The folder's ``tokenizer.json`` (the serialised Hugging Face ``tokenizers`` pipeline: normaliser, SentencePiece
Unigram model, ``</s>`` post-processor) is loaded with the ``tokenizers`` library, so ids equal those of
transformers' ``T5Tokenizer`` on the same folder. Pad token and padding side come from ``tokenizer_config.json`` /
``special_tokens_map.json`` when present. A folder with only ``spiece.model`` is refused with a hint (converting it
needs sentencepiece + transformers, which are not runtime dependencies).
"""

from __future__ import annotations

import functools
import html
import os
import re
import warnings
from pathlib import Path

import numpy as np

from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.files import read_json, read_text


def _token_content(value) -> str | None:
    """Special tokens are stored either as a string or as an AddedToken dict ``{"content": ...}``."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class UMT5Tokenizer:
    """Batch tokenizer: ``tok(texts, max_length) -> (input_ids, attention_mask)``, both (B, max_length) int32.

    Matches ``tokenizer(texts, padding="max_length", max_length=..., truncation=True, add_special_tokens=True)``:
    ``</s>`` is appended, over-long prompts are cut so that ``</s>`` still fits, and the rest is padded."""

    def __init__(self, tokenizer, *, pad_token: str = "<pad>", padding_side: str = "right",
                 truncation_side: str = "right"):
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in the tokenizer's vocabulary")
        if padding_side not in ("left", "right") or truncation_side not in ("left", "right"):
            raise ValueError(f"padding/truncation side must be 'left' or 'right', "
                             f"got {padding_side!r}/{truncation_side!r}")
        self._tok = tokenizer
        self.pad_token, self.pad_id = pad_token, pad_id
        self.padding_side, self.truncation_side = padding_side, truncation_side

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> UMT5Tokenizer:
        """Loads ``directory/tokenizer.json`` (+ optional ``tokenizer_config.json``, ``special_tokens_map.json``)."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        path = directory / "tokenizer.json"
        if not os.path.lexists(path):
            hint = (" It holds only spiece.model: convert it once with transformers "
                    "(T5TokenizerFast.from_pretrained(dir).save_pretrained(dir)) to get tokenizer.json."
                    if (directory / "spiece.model").exists() else "")
            raise FileNotFoundError(f"no tokenizer.json in {directory}.{hint}")
        settings: dict = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins, as in transformers
            f = directory / name
            if os.path.lexists(f):
                settings.update(read_json(f, what="tokenizer config", fix="copy the tokenizer folder again"))
        try:
            tok = Tokenizer.from_str(read_text(path, "tokenizer", what="tokenizer"))
        except Exception as e:  # the tokenizers library raises its own exception type for a bad file
            if isinstance(e, InputError):
                raise
            raise InputError(f"{path}: not a tokenizer.json the tokenizers library reads ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]}); copy the tokenizer folder again") from e
        return cls(tok,
                   pad_token=_token_content(settings.get("pad_token")) or "<pad>",
                   padding_side=settings.get("padding_side", "right"),
                   truncation_side=settings.get("truncation_side", "right"))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: str | list[str], max_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
        texts = [texts] if isinstance(texts, str) else list(texts)
        tok = self._tok
        tok.enable_truncation(max_length=max_length, direction=self.truncation_side)
        tok.enable_padding(length=max_length, pad_id=self.pad_id, pad_token=self.pad_token,
                           direction=self.padding_side)
        try:
            encodings = tok.encode_batch(texts, add_special_tokens=True)
        finally:
            tok.no_truncation()
            tok.no_padding()
        ids = np.asarray([e.ids for e in encodings], dtype=np.int32).reshape(len(texts), max_length)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int32).reshape(len(texts), max_length)
        return ids, mask


@functools.cache
def _ftfy():
    try:
        import ftfy
    except ImportError:
        warnings.warn("ftfy is not installed: prompts are cleaned without ftfy.fix_text (diffusers' Wan pipeline "
                      "uses it to repair mojibake; plain text is unaffected)", stacklevel=3)
        return None
    return ftfy


def clean_prompt(text: str) -> str:
    """diffusers' Wan ``prompt_clean``: ftfy repair (if installed), double HTML unescape, collapse whitespace."""
    ftfy = _ftfy()
    if ftfy is not None:
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()
