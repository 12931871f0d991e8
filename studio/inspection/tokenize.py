"""A run's text <-> token ids: the run's own `tokenizer.json` (Hugging Face `tokenizers` format, shipped with an
imported GPT-2) when its directory holds one, else its dataset's (a text upload tokenized with one), else its
dataset's vocabulary (the `chars` dataset's character table: one token per entry of `DatasetInfo.vocab`).

Not generation (studio.inspection.generate) and not a trainer of tokenizers: it only loads and applies them.

    >>> tok = VocabTokenizer(["a", "b", " "])
    >>> tok.encode("ab ba")
    [0, 1, 2, 1, 0]
    >>> tok.decode([1, 0])
    'ba'
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from studio.errors import DataError

TOKENIZER_FILE = "tokenizer.json"


class VocabTokenizer:
    """Text through a dataset's vocabulary (`vocab[i]` is token i's text): greedy longest match, so a
    character table is one token per character. A character with no token is an error unless the
    vocabulary has `<unk>`."""

    kind = "vocabulary"

    def __init__(self, vocab: Sequence[str], source: str = "the dataset's vocabulary"):
        self.vocab = [str(v) for v in vocab]
        self.source = source
        self._ids = {tok: i for i, tok in reversed(list(enumerate(self.vocab)))}  # the first id wins on repeats
        self._longest = max((len(t) for t in self.vocab), default=1)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def description(self) -> str:
        return f"{self.source}, {self.vocab_size:,} tokens"

    def encode(self, text: str) -> list[int]:
        ids, unknown, i = [], [], 0
        while i < len(text):
            for n in range(min(self._longest, len(text) - i), 0, -1):
                token = self._ids.get(text[i:i + n])
                if token is not None:
                    ids.append(token)
                    i += n
                    break
            else:
                if "<unk>" in self._ids:
                    ids.append(self._ids["<unk>"])
                else:
                    unknown.append(text[i])
                i += 1
        if unknown:
            shown = "".join(self.vocab[:60]) if all(len(v) == 1 for v in self.vocab) else ", ".join(self.vocab[:30])
            raise DataError(f"{', '.join(repr(c) for c in sorted(set(unknown))[:10])} not in {self.source} of "
                            f"{self.vocab_size} tokens; type only these: {shown}")
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.token_strings(ids))

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each token's own text (for axis labels)."""
        return [self.vocab[i] if 0 <= i < len(self.vocab) else f"<{i}>" for i in (int(j) for j in ids)]


class FileTokenizer:
    """A Hugging Face `tokenizers` tokenizer saved as tokenizer.json (GPT-2's byte-level BPE, or any other)."""

    kind = "tokenizer.json"

    def __init__(self, path: str | Path):
        import tokenizers  # only on this path: a run without tokenizer.json never needs the library

        self.path = Path(path)
        self.source = str(self.path)
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(self.path))
        except Exception as e:  # tokenizers raises a plain Exception for a malformed file
            raise DataError(f"{self.path} cannot be read as a Hugging Face tokenizer ({str(e)[:200]}); replace it "
                            "with the tokenizer.json of the checkpoint this run was imported from") from None

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size())

    @property
    def description(self) -> str:
        return f"the run's {TOKENIZER_FILE} ({type(self._tok.model).__name__}, {self.vocab_size:,} tokens)"

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each token decoded on its own (" the" rather than BPE's "Ġthe"); a token holding part of a
        multi-byte character shows as U+FFFD."""
        return [self._tok.decode([int(i)], skip_special_tokens=False) for i in ids]


def run_tokenizer(run_dir: str | Path, vocab: Sequence[str] | None, *, dataset_id: str | None = None,
                  workspace: str | Path | None = None):
    """The tokenizer of the run in `run_dir`: its tokenizer.json when present, else the tokenizer.json of its
    dataset when that is an upload tokenized with one (studio.data.token_upload), else a VocabTokenizer over
    `vocab` (the run's dataset's `DatasetInfo.vocab`); DataError when it has none of these."""
    path = Path(run_dir) / TOKENIZER_FILE
    if path.exists():
        return FileTokenizer(path)
    from studio.dataset_ids import UPLOAD_ID_RE

    if isinstance(dataset_id, str) and UPLOAD_ID_RE.match(dataset_id):
        from studio.data.uploads import uploads_dir

        upload_file = uploads_dir(workspace) / dataset_id / TOKENIZER_FILE
        if upload_file.is_file():
            return FileTokenizer(upload_file)
    if vocab:
        return VocabTokenizer(vocab)
    raise DataError(f"this run has no {TOKENIZER_FILE} in {run_dir} and its dataset has no vocabulary, so text "
                    "cannot be turned into its tokens; use a run of a text dataset (chars) or an imported GPT-2")


def stream_text(tokenizer, prompt_ids: Sequence[int], new_ids: Iterable[int]) -> Iterator[str]:
    """The text each new token adds, decoded with everything before it (byte-level BPE tokens can hold
    part of a character: text is held back while it ends in an incomplete one, U+FFFD)."""
    ids = list(prompt_ids)
    shown = tokenizer.decode(ids)
    for token in new_ids:
        ids.append(int(token))
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd"):
            continue
        if text.startswith(shown):
            piece = text[len(shown):]
        else:  # a decoder that rewrote earlier text (whitespace cleanup): show the last token alone
            piece = tokenizer.decode([int(token)])
        shown = text
        if piece:
            yield piece
