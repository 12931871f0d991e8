"""A .txt tokenized with a given tokenizer.json (Hugging Face `tokenizers` format, e.g. GPT-2's byte-level BPE)
becomes a language-modelling upload: windows of `seq_len` token ids and the next id at each position, stored like
every upload (studio.data.uploads: meta.json + x.npy + y.npy) with the tokenizer.json beside them, so the
dataset is fine-tuning data for a model that shares that tokenizer (an imported GPT-2).

Not the character uploads (uploads.upload_text: one token per character) and not the Data page (which does
not offer this kind yet: call it from Python).

    >>> info = upload_tokenized_text(open("notes.txt", "rb").read(), "notes.txt",                 # doctest: +SKIP
    ...                              tokenizer=open("gpt2/tokenizer.json", "rb").read(), seq_len=128)
    >>> get_dataset(info.id).train.x.shape                                                        # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio.data import readers
from studio.data.budget import check_prepared_size
from studio.data.types import DatasetInfo, split_sizes
from studio.data.uploads import MIN_SAMPLES, _commit, _staging
from studio.errors import DataError

TOKENIZER_FILE = "tokenizer.json"  # the name studio.inspection.tokenize looks for in a run or an upload


def upload_tokenized_text(data: bytes, filename: str, *, tokenizer: bytes, seq_len: int = 64,
                          name: str | None = None, workspace: str | Path | None = None) -> DatasetInfo:
    """Tokenize the UTF-8 text `data` with the tokenizer.json bytes `tokenizer` into non-overlapping windows
    of `seq_len` ids (x) and the ids one position later (y); the new upload's DatasetInfo (task
    language_model, vocab: each id's own text)."""
    import tokenizers

    if not isinstance(seq_len, int) or not 4 <= seq_len <= 4096:
        raise DataError(f"seq_len={seq_len!r}; use an integer from 4 to 4096")
    readers.check_size(data, filename)
    text = readers.decode_text(data, filename)
    try:
        tok = tokenizers.Tokenizer.from_str(bytes(tokenizer).decode("utf-8"))
    except Exception as e:  # tokenizers raises a plain Exception for a malformed file
        raise DataError(f"the tokenizer file cannot be read as a Hugging Face tokenizer.json ({str(e)[:200]}); "
                        "use the tokenizer.json of the model you will fine-tune") from None
    ids = np.asarray(tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    n = (len(ids) - 1) // seq_len  # non-overlapping windows, next-token targets (as builtin.char_windows)
    if n < MIN_SAMPLES:
        raise DataError(f"{filename} is {len(ids):,} tokens long: with seq_len={seq_len} that makes {n} sequences, "
                        f"at least {MIN_SAMPLES} are needed; upload more text or lower seq_len")
    check_prepared_size(2 * n * seq_len * 8, f"inputs and targets: 2 x {n:,} windows x {seq_len} ids x 8 bytes",
                        filename, "upload less text")
    size = int(tok.get_vocab_size())
    vocab = [tok.decode([i], skip_special_tokens=False) for i in range(size)]

    def make_info(upload_id: str) -> DatasetInfo:
        return DatasetInfo(upload_id, name or filename, "language_model", (seq_len,), "int64", (seq_len,), size,
                           None, vocab, f"Next-token prediction on {len(ids):,} tokens ({len(text):,} characters) "
                           f"of {filename}, tokenized with a {type(tok.model).__name__} tokenizer of {size:,} tokens",
                           "upload", split_sizes(n))

    with _staging(workspace) as tmp:
        np.save(tmp / "x.npy", ids[: n * seq_len].reshape(n, seq_len), allow_pickle=False)
        np.save(tmp / "y.npy", ids[1: n * seq_len + 1].reshape(n, seq_len), allow_pickle=False)
        (tmp / TOKENIZER_FILE).write_bytes(bytes(tokenizer))
        return _commit(tmp, "tokens", filename, name, workspace, make_info, {"seq_len": seq_len})
