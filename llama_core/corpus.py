"""The training corpus: open texts installed from Debian packages, cleaned, split, tokenized.

Sources (both installed by `scripts/build_corpus.sh` with apt-get):
- Python 3.11 documentation sources, package `python3.11-doc` (PSF License 2.0):
  /usr/share/doc/python3.11/html/_sources/**/*.rst.txt
- The King James Version of the Bible, package `bible-kjv` (text in the public domain),
  read through its `bible` program.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm

PYTHON_DOCS = Path("/usr/share/doc/python3.11/html/_sources")
VALIDATION_EVERY = 20  # every 20th document is held out, so both splits mix both sources

_ROLE = re.compile(r":[\w.:+-]+:`!?~?([^`<]*?)\s*(?:<[^>`]*>)?`")  # :func:`print` -> print
_LITERAL = re.compile(r"``([^`]+)``")
_RULE = re.compile(r"^([=*\-~^#\"'`+])\1{3,}\s*$")
_SIGNATURES = {"function", "method", "class", "exception", "attribute", "data", "decorator", "classmethod",
               "staticmethod", "describe", "opcode", "cmdoption", "envvar"}
_VERSE = re.compile(r"^(\w+?)(\d+):(\d+) (.*)$")


def clean_rst(text: str) -> str:
    """Turn reStructuredText into readable prose: drop markup and directives, keep text and code."""
    lines, skipping = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if skipping and (not stripped or line[:1].isspace()):
            continue  # the indented body of an index entry, label or comment
        skipping = False
        if stripped.startswith(".. "):
            # Directives like `.. note::` keep their body; labels, index entries and comments don't.
            directive = re.match(r"\.\. ([\w:-]+)::\s*(.*)", stripped)
            skipping = directive is None or directive.group(1) in {"index", "toctree", "highlight", "testsetup",
                                                                     "sectionauthor", "moduleauthor", "module"}
            if directive and directive.group(1).removeprefix("py:") in _SIGNATURES:
                lines.append(directive.group(2))  # keep `open(device, mode)` of `.. function:: open(...)`
            continue
        if _RULE.match(line):
            continue
        line = _LITERAL.sub(r"\1", _ROLE.sub(r"\1", line))
        lines.append(line.replace("::", ":") if line.rstrip().endswith("::") else line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def python_doc_documents(root: Path = PYTHON_DOCS) -> Iterator[tuple[str, str]]:
    for path in sorted(root.rglob("*.rst.txt")):
        text = clean_rst(path.read_text(encoding="utf-8", errors="replace"))
        if len(text) > 200:
            yield f"python-docs/{path.relative_to(root)}", text


def kjv_documents() -> Iterator[tuple[str, str]]:
    """One document per chapter, verses joined into a paragraph without their references."""
    output = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    chapter, verses = None, []
    for line in output.splitlines():
        match = _VERSE.match(line)
        if not match:
            continue
        key = f"{match.group(1)} {match.group(2)}"
        if key != chapter and verses:
            yield f"kjv/{chapter}", " ".join(verses)
            verses = []
        chapter = key
        verses.append(match.group(4))
    if verses:
        yield f"kjv/{chapter}", " ".join(verses)


def write_documents(out_dir: Path) -> dict:
    """Write train.jsonl and val.jsonl; return their sizes in characters and documents."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [python_doc_documents(), kjv_documents()]
    stats = {"train": {"documents": 0, "characters": 0}, "val": {"documents": 0, "characters": 0}}
    with open(out_dir / "train.jsonl", "w") as train, open(out_dir / "val.jsonl", "w") as val:
        index = 0
        for source in sources:
            for name, text in source:
                split = "val" if index % VALIDATION_EVERY == VALIDATION_EVERY - 1 else "train"
                (val if split == "val" else train).write(json.dumps({"name": name, "text": text}) + "\n")
                stats[split]["documents"] += 1
                stats[split]["characters"] += len(text)
                index += 1
    return stats


def read_documents(path: Path) -> Iterator[str]:
    with open(path) as lines:
        for line in lines:
            yield json.loads(line)["text"]


def train_tokenizer(train_jsonl: Path, out_prefix: Path, vocab_size: int = 4096) -> Path:
    """Train a tokenizer the way LLaMA's was: BPE, byte fallback, digits split, no normalisation."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=(line for doc in read_documents(train_jsonl) for line in doc.splitlines() if line.strip()),
        model_prefix=str(out_prefix), vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
        split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, character_coverage=0.9999, input_sentence_size=400_000,
        shuffle_input_sentence=True, bos_id=1, eos_id=2, unk_id=0, pad_id=-1, num_threads=2, minloglevel=2,
    )
    return out_prefix.with_suffix(".model")


def tokenize_documents(jsonl: Path, tokenizer_path: Path, out_path: Path) -> int:
    """Write every document as BOS + tokens + EOS into one uint16 array; return the token count."""
    processor = spm.SentencePieceProcessor(model_file=str(tokenizer_path))
    assert processor.vocab_size() < 2**16, "uint16 storage needs a vocabulary below 65536"
    chunks = []
    for text in read_documents(jsonl):
        chunks.append(np.array([processor.bos_id(), *processor.encode(text), processor.eos_id()], dtype=np.uint16))
    tokens = np.concatenate(chunks)
    tokens.tofile(out_path)
    return int(tokens.size)


def build_corpus(out_dir: Path, tokenizer_path: Path | None = None, vocab_size: int = 4096) -> dict:
    """Documents, tokenizer (trained unless one is given) and token files; stats saved as stats.json."""
    out_dir = Path(out_dir)
    stats = write_documents(out_dir)
    if tokenizer_path is None:
        tokenizer_path = train_tokenizer(out_dir / "train.jsonl", out_dir / "tokenizer", vocab_size)
    for split in ("train", "val"):
        stats[split]["tokens"] = tokenize_documents(out_dir / f"{split}.jsonl", tokenizer_path, out_dir / f"{split}.bin")
    stats["tokenizer"] = str(tokenizer_path)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats
