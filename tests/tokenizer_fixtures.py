"""Tokenizer files in the layouts of the real downloads, trained here on the tiny corpus (small vocabularies).

Each writer puts into a directory exactly the files a real download has (names, config keys, special tokens, their
ids' order) so the loaders and transformers' AutoTokenizer (the reference in the tests) read them as they would read
LLaMA 2, Alpaca, Llama 3 (Hugging Face and Meta layouts), SmolLM2 and llama2.c. Training is cached per process:
every writer call after the first only writes files.
"""

from __future__ import annotations

import base64
import functools
import json
import struct
import tempfile
from pathlib import Path

import sentencepiece as spm
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

CORPUS = Path(__file__).parent / "data" / "tiny_corpus.txt"

# Meta's Llama 3 pre-tokenizer pattern (tokenizer.py `pat_str`, the Split regex of the HF tokenizer.json).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Llama 3.1's special tokens as its tokenizer.json has them (ids 128000...): 11 named, then reserved 3..247.
LLAMA3_NAMED_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eom_id|>", "<|eot_id|>", "<|python_tag|>",
]
LLAMA3_SPECIALS = LLAMA3_NAMED_SPECIALS + [
    f"<|reserved_special_token_{3 + i}|>" for i in range(256 - len(LLAMA3_NAMED_SPECIALS))
]
# SmolLM2's added tokens, ids 0..16 in this order.
SMOLLM_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
    "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
]

# The templates as the real tokenizer_config.json files carry them.
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SP_VOCAB = 512  # pieces in the SentencePiece fixture (LLaMA's layout: <unk>, <s>, </s>, 256 bytes, merges)
BPE_VOCAB = 512  # byte-level BPE: 256 byte symbols + 256 merges, before the added tokens


def _write_json(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _added_token(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}


@functools.cache
def sentencepiece_model_bytes() -> bytes:
    """A LLaMA-style SentencePiece model (BPE, byte fallback, split digits, no normalisation), trained once."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = Path(tmp) / "tokenizer"
        spm.SentencePieceTrainer.train(
            input=str(CORPUS), model_prefix=str(prefix), vocab_size=SP_VOCAB, model_type="bpe", byte_fallback=True,
            split_digits=True, character_coverage=1.0, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
            normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
            minloglevel=2, num_threads=1,
        )
        return prefix.with_suffix(".model").read_bytes()


def write_llama2_sentencepiece(directory: str | Path, *, chat_template: str | None = None,
                               added_pad: bool = False) -> int:
    """LLaMA 2 on the Hub: tokenizer.model + tokenizer_config.json + special_tokens_map.json.

    With `added_pad`, Alpaca's layout: `[PAD]` appended in added_tokens.json as the one id past the model.
    Returns the vocabulary size (ids the tokenizer can produce).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.model").write_bytes(sentencepiece_model_bytes())
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    config = {
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False, "legacy": False,
        "model_max_length": 4096, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "added_tokens_decoder": {str(i): _added_token(t) for i, t in enumerate(["<unk>", "<s>", "</s>"])},
        **specials,
    }
    vocab_size = SP_VOCAB
    if added_pad:
        _write_json(directory / "added_tokens.json", {"[PAD]": SP_VOCAB})
        specials["pad_token"] = "[PAD]"
        config["pad_token"] = "[PAD]"
        config["added_tokens_decoder"][str(SP_VOCAB)] = _added_token("[PAD]")
        vocab_size += 1
    if chat_template is not None:
        config["chat_template"] = chat_template
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", specials)
    return vocab_size


def write_llama2_hf_json(directory: str | Path, *, with_model: bool = False, chat_template: str | None = None) -> int:
    """A LLaMA 2 conversion as the Hub holds it: tokenizer.json (BPE with byte fallback; normalizer Prepend('▁') +
    Replace(' ', '▁'), the SentencePiece-style decoder, <s> added by the post-processor) + tokenizer_config.json
    naming LlamaTokenizer + special_tokens_map.json; `with_model` keeps tokenizer.model beside it, as most LLaMA 2
    repositories do. The vocabulary and merges are transformers' conversion of the SentencePiece fixture."""
    from transformers import AutoTokenizer

    directory = Path(directory)
    vocab_size = write_llama2_sentencepiece(directory, chat_template=chat_template)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(sentencepiece_model_bytes())
        converted = json.loads(AutoTokenizer.from_pretrained(tmp).backend_tokenizer.to_str())
    tokenizer = HFTokenizer.from_str(json.dumps({**converted, "pre_tokenizer": None, "normalizer": None,
                                                 "post_processor": None, "decoder": None}))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                           decoders.Strip(" ", 1, 0)])
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", 1)])
    tokenizer.save(str(directory / "tokenizer.json"))
    if not with_model:
        (directory / "tokenizer.model").unlink()
    return vocab_size


def _bytes_of_symbol() -> dict[str, int]:
    # GPT-2's byte-to-unicode table inverted: the printable stand-in of each byte (Ġ for space, Ċ for newline).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    stand_in, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            stand_in[byte] = chr(byte)
        else:
            stand_in[byte] = chr(256 + extra)
            extra += 1
    return {symbol: byte for byte, symbol in stand_in.items()}


@functools.cache
def llama3_ranks() -> tuple[tuple[bytes, int], ...]:
    """Byte-level BPE ranks trained with Llama 3's pre-tokenizer: (token bytes, rank) in rank order."""
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train([str(CORPUS)], trainer)
    to_byte = _bytes_of_symbol()
    vocab = tokenizer.get_vocab()
    return tuple((bytes(to_byte[c] for c in token), rank) for token, rank in sorted(vocab.items(), key=lambda x: x[1]))


def write_llama3_tiktoken(directory: str | Path) -> int:
    """Meta's Llama 3 download: tokenizer.model in tiktoken format (base64 token, space, rank per line).

    Meta's tokenizer.py adds the 256 special tokens after the ranks in code; the file holds only the ranks.
    Returns the vocabulary size (ranks + 256 special tokens).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ranks = llama3_ranks()
    lines = [f"{base64.b64encode(token).decode('ascii')} {rank}\n" for token, rank in ranks]
    (directory / "tokenizer.model").write_text("".join(lines), encoding="ascii")
    return len(ranks) + len(LLAMA3_SPECIALS)


def llama3_tokenizer_json() -> HFTokenizer:
    """The tokenizer.json transformers' TikTokenConverter makes from the ranks, with Llama 3's BOS post-processor."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    with tempfile.TemporaryDirectory() as tmp:
        write_llama3_tiktoken(tmp)
        tokenizer = TikTokenConverter(vocab_file=str(Path(tmp) / "tokenizer.model"), pattern=LLAMA3_PATTERN,
                                      extra_special_tokens=LLAMA3_SPECIALS).converted()
    bos = LLAMA3_SPECIALS[0]
    bos_id = tokenizer.token_to_id(bos)
    # As in Meta's Llama 3 tokenizer.json: ByteLevel offsets, then <|begin_of_text|> before every sequence.
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]),
    ])
    return tokenizer


def write_llama3_hf(directory: str | Path, *, chat_template: str | None = LLAMA3_TEMPLATE) -> dict:
    """Llama 3 on the Hub: tokenizer.json + tokenizer_config.json + special_tokens_map.json.

    With a chat template the layout is the Instruct model's (eos_token `<|eot_id|>`), without it the base model's
    (`<|end_of_text|>`). Returns {"vocab_size", "bos_id", "eos_id", "eot_id", "eom_id"}.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = llama3_tokenizer_json()
    tokenizer.save(str(directory / "tokenizer.json"))
    first_special = len(llama3_ranks())
    eos = "<|eot_id|>" if chat_template is not None else "<|end_of_text|>"
    config = {
        "added_tokens_decoder": {str(first_special + i): _added_token(t) for i, t in enumerate(LLAMA3_SPECIALS)},
        "bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True, "eos_token": eos,
        "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", {"bos_token": "<|begin_of_text|>", "eos_token": eos})
    special_id = {t: first_special + i for i, t in enumerate(LLAMA3_SPECIALS)}
    return {"vocab_size": first_special + len(LLAMA3_SPECIALS), "bos_id": special_id["<|begin_of_text|>"],
            "eos_id": special_id[eos], "eot_id": special_id["<|eot_id|>"], "eom_id": special_id["<|eom_id|>"]}


@functools.cache
def _smollm_tokenizer_json() -> str:
    # GPT-2-style byte-level BPE as SmolLM2's: single digits split first, the added tokens at ids 0..16, no BOS.
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB + len(SMOLLM_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[AddedToken(t, normalized=False, special=True)
                                                  for t in SMOLLM_SPECIALS])
    tokenizer.train([str(CORPUS)], trainer)
    return tokenizer.to_str()


def write_smollm_hf(directory: str | Path, *, chat_template: str | None = CHATML_TEMPLATE) -> dict:
    """SmolLM2 on the Hub: tokenizer.json + tokenizer_config.json (+ special_tokens_map.json), no tokenizer.model.

    With a chat template the layout is SmolLM2-Instruct's (bos `<|im_start|>`, eos `<|im_end|>`), without it the
    base model's (`<|endoftext|>` for both). Returns {"vocab_size", "bos_id", "eos_id"}.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").write_text(_smollm_tokenizer_json(), encoding="utf-8")
    bos, eos = ("<|im_start|>", "<|im_end|>") if chat_template is not None else ("<|endoftext|>", "<|endoftext|>")
    specials = {"bos_token": bos, "eos_token": eos, "unk_token": "<|endoftext|>", "pad_token": eos,
                "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}
    config = {
        "add_prefix_space": False, "clean_up_tokenization_spaces": False, "model_max_length": 8192,
        "tokenizer_class": "GPT2Tokenizer", "vocab_size": BPE_VOCAB + len(SMOLLM_SPECIALS),
        "added_tokens_decoder": {str(i): _added_token(t) for i, t in enumerate(SMOLLM_SPECIALS)}, **specials,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", specials)
    return {"vocab_size": BPE_VOCAB + len(SMOLLM_SPECIALS), "bos_id": SMOLLM_SPECIALS.index(bos),
            "eos_id": SMOLLM_SPECIALS.index(eos)}


def write_llama2c_tokenizer(path: str | Path, sentencepiece_model: str | Path | None = None) -> int:
    """A llama2.c tokenizer.bin exported as llama2.c's tokenizer.py `export()` does it.

    Layout: uint32 max token length, then per id: float32 score, uint32 length, the piece's UTF-8 bytes with '▁' as
    ' ' and BOS/EOS written as '\\n<s>\\n' / '\\n</s>\\n'. Default model: the SentencePiece fixture. Returns the size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    processor = spm.SentencePieceProcessor()
    if sentencepiece_model is None:
        processor.load_from_serialized_proto(sentencepiece_model_bytes())
    else:
        processor.load(str(sentencepiece_model))
    tokens, scores = [], []
    for i in range(processor.vocab_size()):
        piece = processor.id_to_piece(i)
        if i == processor.bos_id():
            piece = "\n<s>\n"
        elif i == processor.eos_id():
            piece = "\n</s>\n"
        tokens.append(piece.replace("\u2581", " ").encode("utf-8"))
        scores.append(processor.get_score(i))
    with open(path, "wb") as f:
        f.write(struct.pack("I", max(len(t) for t in tokens)))
        for token, score in zip(tokens, scores, strict=True):
            f.write(struct.pack("fI", score, len(token)))
            f.write(token)
    return processor.vocab_size()


# transformers loads these with AutoTokenizer (the reference); "llama3-meta" and "llama2c" have no HF layout.
HF_LAYOUTS = ("llama2", "alpaca", "llama2-json", "llama2-json+model", "llama3", "llama3-base", "smollm")


def write_all_layouts(root: str | Path) -> dict[str, Path]:
    """Every layout above in its own folder under `root`: name -> folder (llama2c -> its tokenizer.bin)."""
    root = Path(root)
    write_llama2_sentencepiece(root / "llama2", chat_template=LLAMA2_TEMPLATE)
    write_llama2_sentencepiece(root / "alpaca", added_pad=True)
    write_llama2_hf_json(root / "llama2-json")
    write_llama2_hf_json(root / "llama2-json+model", with_model=True)
    write_llama3_hf(root / "llama3")
    write_llama3_hf(root / "llama3-base", chat_template=None)
    write_llama3_tiktoken(root / "llama3-meta")
    write_smollm_hf(root / "smollm")
    write_llama2c_tokenizer(root / "llama2c" / "tokenizer.bin")
    folders = {name: root / name for name in HF_LAYOUTS + ("llama3-meta",)}
    return folders | {"llama2c": root / "llama2c" / "tokenizer.bin"}
