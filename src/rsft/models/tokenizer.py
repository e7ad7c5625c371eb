"""A character tokenizer: one token per character of a fixed alphabet, plus pad / bos / eos.

Small synthetic tasks (arithmetic) need no learned vocabulary; a character vocabulary makes every
sequence exactly as long as its text, so context-window checks are easy to reason about. The
language-model code only relies on the small protocol below (``encode``, ``decode``, ``pad_id``,
``eos_id``, ``bos_id``, ``vocab_size``), which the Hugging Face adapter in
:mod:`rsft.models.hf_causal_lm` also implements.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

#: Printable ASCII without the form-feed/vertical-tab/carriage-return oddities.
DEFAULT_ALPHABET = string.digits + string.ascii_letters + string.punctuation + " \n"

SPECIALS = ("<pad>", "<bos>", "<eos>")


class CharTokenizer:
    """Maps each character of ``alphabet`` to one id; ids 0, 1, 2 are pad, bos and eos."""

    pad_id = 0
    bos_id = 1
    eos_id = 2

    def __init__(self, alphabet: str = DEFAULT_ALPHABET):
        if not alphabet:
            raise ValueError("the tokenizer alphabet is empty (set model.net.alphabet)")
        if len(set(alphabet)) != len(alphabet):
            dupes = sorted({c for c in alphabet if alphabet.count(c) > 1})
            raise ValueError(f"the tokenizer alphabet repeats characters {dupes!r} (set model.net.alphabet)")
        self.alphabet = alphabet
        self._ids = {c: i + len(SPECIALS) for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(SPECIALS) + len(self.alphabet)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} in {text!r} is not in the tokenizer alphabet; add it to model.net.alphabet"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` up to the first eos; pad and bos are skipped."""
        out = []
        offset = len(SPECIALS)
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i >= offset:
                out.append(self.alphabet[i - offset])
        return "".join(out)
