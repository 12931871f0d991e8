"""Class names for an imported classifier, read at run time from a file the user has or the publisher serves.

No label list ships with the studio. `read_labels` accepts the formats people have:

- plain text, one name a line (PyTorch Hub's `imagenet_classes.txt`);
- numbered text, lines `N, name` (Keras-style; a header line before them is skipped);
- Keras' `imagenet_class_index.json`: {"0": ["n01440764", "tench"], ...};
- a JSON list of names;
- a Hugging Face `config.json` with `id2label` ({"0": "tench", ...}).

Names are kept as written (underscores too). The names of a run live in its directory
(`RunDir.class_names_file`); `stored_labels` reads them back, `set_labels` gives an imported run names
afterwards (`python -m studio pretrained labels RUN FILE`).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "labels.txt"
    >>> _ = p.write_text("0, tench\\n1, goldfish\\n")
    >>> read_labels(p)
    ['tench', 'goldfish']
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from studio.pretrained.info import stored_labels  # noqa: F401 - read back where Inspect reads it
from studio.pretrained.mapping import PretrainedError

# Files picked up beside a checkpoint (a .pth's folder, or a GPT-2 folder), in this order.
BESIDE = ("imagenet_classes.txt", "labels.txt", "imagenet_class_index.json")
FORMATS = ("plain text (one name a line)", "numbered text (lines 'N, name')",
           "Keras imagenet_class_index.json ({\"0\": [\"n01440764\", \"tench\"], ...})", "a JSON list of names",
           "a Hugging Face config.json with id2label")
ADD_LATER = "python -m studio pretrained labels {run_id} {file}"
_NUMBERED = re.compile(r"^\s*(\d+)\s*[,:\t]\s*(.*?)\s*$")


def _not_a_format(name: str, why: str) -> PretrainedError:
    return PretrainedError(f"{name}: {why}; it is not one of the class-name formats tried: " + "; ".join(FORMATS))


def _unquote(s: str) -> str:
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        s = s[1:-1].strip()
    return s


def _by_index(pairs: list[tuple[int, str, str]], name: str) -> list[str]:
    """Names ordered by their indices [(index, name, where)], which must be 0..n-1 each once."""
    seen: dict[int, str] = {}
    for index, label, where in pairs:
        if index in seen:
            raise PretrainedError(f"{name}: index {index} is given twice ({seen[index]} and {where}); each class "
                                  "index must appear once")
        if not label:
            raise PretrainedError(f"{name}: index {index} has an empty name ({where}); give every class a name")
        seen[index] = where
    missing = sorted(set(range(len(pairs))) - set(seen))
    if missing:
        extra = sorted(i for i in seen if i >= len(pairs))
        listed = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise PretrainedError(f"{name}: {'index' if len(missing) == 1 else 'indices'} {listed} "
                              f"{'is' if len(missing) == 1 else 'are'} missing ({len(pairs)} names, highest index "
                              f"{max(seen)}"
                              + (f", out of range: {', '.join(map(str, extra[:5]))}" if extra else "")
                              + "); the indices must run 0 to N-1 without gaps")
    by = {index: label for index, label, _ in pairs}
    return [by[i] for i in range(len(pairs))]


def _from_json(doc, name: str) -> list[str]:
    if isinstance(doc, list):
        if not doc:
            raise PretrainedError(f"{name} is an empty JSON list; give one name per class")
        bad = [i for i, v in enumerate(doc) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise _not_a_format(name, f"a JSON list whose entries {', '.join(map(str, bad[:5]))} are not non-empty "
                                      "strings")
        return [v.strip() for v in doc]
    if not isinstance(doc, dict):
        raise _not_a_format(name, f"JSON holding a {type(doc).__name__}")
    if "id2label" in doc:
        table, kind = doc["id2label"], "id2label"
        if not isinstance(table, dict):
            raise _not_a_format(name, "its id2label is not an object {\"0\": \"name\", ...}")
    elif doc and all(isinstance(k, str) and k.strip().isdigit() for k in doc):
        table, kind = doc, "index"
    else:
        keys = ", ".join(list(doc)[:6])
        raise _not_a_format(name, f"a JSON object without id2label whose keys ({keys}) are not class indices")
    if not table:
        raise PretrainedError(f"{name}: {kind} is empty; give one name per class")
    pairs = []
    for k, v in table.items():
        if not str(k).strip().isdigit():
            raise _not_a_format(name, f"{kind} key {k!r} is not a class index")
        if isinstance(v, list) and len(v) == 2 and all(isinstance(s, str) for s in v):
            v = v[1]  # Keras: [WordNet id, name]
        if not isinstance(v, str):
            raise _not_a_format(name, f"{kind}[{k!r}] is {json.dumps(v)[:60]}, not a name or [wnid, name]")
        pairs.append((int(k), v.strip(), f"key {k!r}"))
    return _by_index(pairs, name)


def _from_text(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    first = next(i for i, ln in enumerate(lines) if ln.strip())
    body = lines[first:]
    numbered = [_NUMBERED.match(ln) for ln in body]
    if all(m for m in numbered[1:]) and len(body) > 1 and (numbered[0] or len(body) > 2):
        start = 0 if numbered[0] else 1  # a header line ("index, name") before the numbered lines
        return _by_index([(int(m.group(1)), _unquote(m.group(2)), f"line {first + i + 1}")
                          for i, m in enumerate(numbered) if i >= start], name)
    if len(body) == 1 and numbered[0]:
        return _by_index([(int(numbered[0].group(1)), _unquote(numbered[0].group(2)), f"line {first + 1}")], name)
    names = []
    for i, ln in enumerate(body):
        if not ln.strip():
            raise PretrainedError(f"{name}: line {first + i + 1} is empty, between names; in a one-name-a-line file "
                                  "the line number is the class index, so a blank line would shift every class after "
                                  "it: remove it or name the class")
        names.append(ln.strip())
    return names


def parse_labels(data: bytes | str, name: str = "the labels file", num_classes: int | None = None) -> list[str]:
    """The class names in `data` (the bytes of one of the formats above), in class-index order.

    PretrainedError when it is empty, has duplicated or missing indices, is none of the formats, or (with
    `num_classes`) holds another number of names than the model has outputs."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise _not_a_format(name, f"not UTF-8 text (byte {e.start})") from None
    if not data.strip():
        raise PretrainedError(f"{name} is empty; it should hold the class names, one a line or as JSON")
    if "\x00" in data:
        raise _not_a_format(name, "binary data (it holds NUL bytes)")
    if data.lstrip()[0] in "[{":
        try:
            doc = json.loads(data)
        except json.JSONDecodeError as e:
            raise _not_a_format(name, f"it starts like JSON but is not valid JSON ({e.msg} at line {e.lineno})") \
                from None
        names = _from_json(doc, name)
    else:
        names = _from_text(data, name)
    if num_classes is not None and len(names) != num_classes:
        raise PretrainedError(f"{name} holds {len(names):,} class names but the model has {num_classes:,} outputs; "
                              "give the labels file of the dataset these weights were trained on")
    return names


def read_labels(path, num_classes: int | None = None) -> list[str]:
    """The class names in the file at `path` (see `parse_labels`)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PretrainedError(f"cannot read the labels file {path} ({e.strerror or e}); give the path of a text or "
                              "JSON file of class names") from None
    return parse_labels(data, str(path), num_classes)


def find_beside(checkpoint) -> Path | None:
    """A labels file lying beside a checkpoint: in a .pth's folder or in a GPT-2 folder (BESIDE's names),
    or that folder's config.json when it has id2label. None when there is none."""
    p = Path(checkpoint)
    folder = p if p.is_dir() else p.parent
    for n in BESIDE:
        if (folder / n).is_file():
            return folder / n
    config = folder / "config.json"
    if p.is_dir() and config.is_file():
        try:
            if "id2label" in json.loads(config.read_text()):
                return config
        except (OSError, ValueError):
            return None
    return None


def store_labels(run_dir, names: list[str], source: str) -> None:
    """Write the names into the run directory (`RunDir.class_names_file`)."""
    from studio.graph import atomic_write_text
    from studio.runs.rundir import RunDir

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    atomic_write_text(rd.class_names_file, json.dumps({"source": source, "names": list(names)}, indent=1) + "\n")


def num_outputs(graph) -> int | None:
    """The number of classes a classifier graph scores (its output's last size); None for other graphs."""
    from studio.pretrained.info import imported_info

    info = imported_info(graph, "")
    return info.num_classes if info.task == "classification" else None


def set_labels(run_id: str, path, *, workspace=None, store=None, source: str | None = None) -> list[str]:
    """Give the imported classifier run `run_id` the class names in the file at `path`; returns them.

    The count must equal the model's outputs; on any error the run is left unchanged. `source` names the
    file in the event log (default: its path; an upload's name for a temporary file)."""
    from studio.graph import load_graph
    from studio.runs.rundir import RunDir
    from studio.runs.store import Store

    ws = Path(workspace) if workspace is not None else None
    store = store or Store(ws / "studio.db" if ws is not None else None)
    record = store.get_run(run_id)
    if record.status != "imported":
        raise PretrainedError(f"run {run_id} has status {record.status}, not imported; a run trained here takes its "
                              "class names from its dataset")
    rd = RunDir.of(run_id, ws)
    k = num_outputs(load_graph(rd.graph_file))
    if k is None:
        raise PretrainedError(f"run {run_id} is not a classifier (its graph does not end in class scores); class "
                              "names apply to image classifiers such as an imported ResNet")
    names = read_labels(path, k) if source is None else parse_labels(Path(path).read_bytes(), source, k)
    source = source or str(Path(path).expanduser().resolve())
    store_labels(rd, names, source)
    store.log_event(run_id, f"class names: {len(names):,} from {source}")
    return names


def labels_for_import(graph, checkpoint, labels=None, source: str | None = None):
    """((names, where they came from) or None, a note for the import's event log or None).

    An explicit `labels` file must fit (PretrainedError otherwise: nothing is imported); one found beside
    the checkpoint is used when it fits and only noted when it does not. `source` (an upload) names the
    files instead of their temporary path."""
    k = num_outputs(graph)

    def where(p: Path) -> str:
        return f"{p.name} ({source})" if source else str(p.resolve())

    if labels is not None:
        if k is None:
            raise PretrainedError(f"class names were given ({labels}) but this model is not a classifier (its output "
                                  "is not one score per class); leave --labels out")
        p = Path(labels).expanduser()
        names = read_labels(p, k)
        return (names, where(p)), f"class names: {len(names):,} from {where(p)}"
    if k is None:
        return None, None
    found = find_beside(checkpoint)
    if found is not None:
        try:
            names = read_labels(found, k)
        except PretrainedError as e:
            return None, (f"class names not stored: {found.name} beside the checkpoint does not fit ({e}); add a "
                          f"fitting file later with `{ADD_LATER.format(run_id='RUN_ID', file='FILE')}`")
        return (names, where(found)), f"class names: {len(names):,} from {where(found)} (found beside the checkpoint)"
    return None, (f"no class names stored (Inspect shows class indices); add them with "
                  f"`{ADD_LATER.format(run_id='RUN_ID', file='FILE')}`")
