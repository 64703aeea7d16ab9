"""Build tiny, randomly initialised Qwen-architecture models for offline tests.

Nothing is downloaded: every file is generated locally and deterministically.

``--kind vlm`` builds a tiny **Qwen3-VL** (``Qwen3VLConfig`` +
``Qwen3VLForConditionalGeneration``; text hidden 128, 2 layers, 4 heads / 2 KV
heads, head_dim 32; vision depth 2, hidden 64, patch 16, temporal patch 2,
spatial merge 2; about 1 M parameters) with a ``Qwen3VLProcessor``
(``Qwen2VLImageProcessor`` + ``Qwen3VLVideoProcessor``).  It reloads with
``AutoProcessor`` / ``AutoModelForImageTextToText``.

``--kind text`` builds a tiny **Qwen3** causal LM (``Qwen3Config`` +
``Qwen3ForCausalLM``), the stand-in for the text teacher that reads caption/ASR
evidence and writes ``<think>..</think><answer>yes|no</answer>``.  It reloads
with ``AutoTokenizer`` / ``AutoModelForCausalLM``.

``--kind omni`` builds a tiny **Qwen3-Omni** (``Qwen3OmniMoeConfig`` without a talker: MoE text
model, vision and audio encoders; head_dim 32, which vLLM's CPU attention supports) with a
``Qwen3OmniMoeProcessor``, the captioner's architecture (:func:`build_tiny_omni`). Its config also
carries the fields vLLM's Qwen3-Omni reads and transformers' config classes lack, so it runs on
the HF backend (its thinker) and on vLLM.

All use the same tokenizer, a byte-level BPE trained with the ``tokenizers``
library on a few thousand synthetic documents generated from a fixed seed
(``tokenizer_seed``, independent of the weight ``seed``): the project's prompts,
``<think>``/``<answer>`` outputs, frame timestamps and a synthetic-video vocabulary
(shapes, colours, motions, counts, backgrounds, ASR filler).  Its pipeline is the
one of Qwen2's tokenizer (NFC, Qwen's split regex, byte-level), so
``Qwen2Tokenizer`` and ``PreTrainedTokenizerFast`` read it identically.  Added
tokens:

* special: ``<|endoftext|> <|im_start|> <|im_end|> <|vision_start|>
  <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|>``;
* non-special (kept by ``decode(skip_special_tokens=True)``, as Qwen3 does for
  ``<think>``): ``<think> </think> <answer> </answer>``.  Each is one token, so
  ``"<answer>yes</answer>"`` is ``[<answer>, yes, </answer>]``.  The real Qwen
  vocabulary has ``<think>``/``</think>`` but splits ``<answer>`` into several
  tokens: code must not rely on ``<answer>`` being one token.

``yes``, ``no``, `` yes`` and `` no`` are single tokens (checked at build time).
The model's vocabulary is ``len(tokenizer)`` rounded up to a multiple of 64, so,
as in real Qwen checkpoints, the logits have a few ids that no text maps to.

The chat template is Qwen-style: ``<|im_start|>{role}\\n...<|im_end|>\\n``; a
message's content is a string or a list of ``{"type": "text"|"video"|"image"}``
items (a video renders as ``<|vision_start|><|video_pad|><|vision_end|>``);
``add_generation_prompt`` appends ``<|im_start|>assistant\\n`` and
``enable_thinking=False`` additionally appends an empty think block (Qwen3).

The generation config stops on ``<|im_end|>`` or ``<|endoftext|>``, pads with
``<|endoftext|>`` and decodes greedily (real Qwen checkpoints sample).

The same ``seed`` gives byte-identical files (weights, configs, tokenizer); a
different seed gives different weights and the same tokenizer.

Usage::

    python -m rankvideo.demo.tiny_model --kind vlm --output DIR [--seed N]
    python -m rankvideo.demo.tiny_model --kind text --output DIR [--seed N]
    python -m rankvideo.demo.tiny_model --kind omni --output DIR [--seed N]

or ``build_tiny_vlm(DIR, seed=0, **overrides)`` / ``build_tiny_text_model(...)``;
the keyword overrides are listed in ``VLM_DEFAULTS`` and ``TEXT_DEFAULTS``.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from rankvideo import prompts
from rankvideo.demo import synthetic

logger = logging.getLogger("rankvideo.demo.tiny_model")

__all__ = [
    "build_tiny_omni",
    "VLM_DEFAULTS",
    "TEXT_DEFAULTS",
    "SPECIAL_TOKENS",
    "REASONING_TOKENS",
    "CHAT_TEMPLATE",
    "build_tokenizer",
    "build_tiny_vlm",
    "build_tiny_text_model",
    "main",
]

# --------------------------------------------------------------------------------------
# Sizes (every key can be overridden by keyword)
# --------------------------------------------------------------------------------------

_TOKENIZER_DEFAULTS: dict[str, Any] = {
    "tokenizer_vocab_size": 1024,  # byte-level BPE vocabulary before the added tokens
    "tokenizer_seed": 1234,  # seed of the synthetic training corpus (not of the weights)
    "tokenizer_num_docs": 3000,  # synthetic documents the BPE is trained on
    "vocab_multiple_of": 64,  # model vocab = len(tokenizer) rounded up to this
}

_TEXT_SIZE_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.02,
}

VLM_DEFAULTS: dict[str, Any] = {
    **_TOKENIZER_DEFAULTS,
    **_TEXT_SIZE_DEFAULTS,
    "rope_theta": 5_000_000.0,
    "mrope_section": None,  # None: split head_dim/2 like Qwen3-VL's [24, 20, 20] of 64
    "tie_word_embeddings": False,
    "vision_depth": 2,
    "vision_hidden_size": 64,
    "vision_intermediate_size": 128,
    "vision_num_heads": 4,
    "patch_size": 16,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "num_position_embeddings": 256,  # must be a square (16 x 16 learned grid, interpolated)
    "deepstack_visual_indexes": None,  # None: [0, ..., min(vision_depth, num_hidden_layers) - 1]
}

TEXT_DEFAULTS: dict[str, Any] = {
    **_TOKENIZER_DEFAULTS,
    **_TEXT_SIZE_DEFAULTS,
    "rope_theta": 1_000_000.0,
    "tie_word_embeddings": True,
}

# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
SINGLE_TOKEN_WORDS = ["yes", "no", " yes", " no"]

# Qwen2's pre-tokenisation regex (contractions, letters with one leading non-letter,
# single digits, punctuation runs, newlines, spaces).
_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- elif message['content'] is not none -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' or 'video' in item -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'image' or 'image' in item or 'image_url' in item -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in item -%}"
    "{{- item['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)

# Prompt texts of the project, used as tokenizer training text (rankvideo.prompts is their one source).
_REFERENCE = prompts.rerank_prompt("reference_inference")
_DEFAULT = prompts.rerank_prompt("default")
_SYS_RERANK, _USER_RERANK = _REFERENCE.system, _REFERENCE.user
_SYS_TRAIN, _USER_TRAIN = _DEFAULT.system, _DEFAULT.user
_SYS_CAPTION, _USER_CAPTION = prompts.CAPTION_SYSTEM, prompts.CAPTION_USER
_SYS_TEACHER, _USER_TEACHER = prompts.TEACHER_SYSTEM, prompts.TEACHER_USER

_SHAPES = list(synthetic.SHAPES)
_COLOURS = list(synthetic.COLOURS)
_DIRECTIONS = list(synthetic.MOTIONS)
_BACKGROUNDS = list(synthetic.BACKGROUNDS)
_COUNT_WORDS = dict(synthetic.COUNT_WORDS)
_FILLERS = ["uh", "um", "so", "okay", "you know", "like", "well", "right", "yeah"]
# Everyday words, so that text outside the synthetic domain (news-like queries, ASR) does not
# fall back to single bytes everywhere.
_GENERIC = (
    "people man woman child children group crowd city street road car bus train plane boat water river "
    "sea beach mountain snow rain fire smoke building house school church market stadium game match team "
    "player ball dog cat bird horse music song dance speech news report interview protest police event "
    "festival parade election president government country world day night morning evening year time "
    "first last new old big small large little long short fast slow high low good bad many few some all "
    "every other same different there here this that these those what which who where when why how "
    "is are was were be been being have has had do does did can could will would should may might must "
    "and or but if then because while after before during about into over under between through near "
    "show shows shown see seen look looks watch talk talks say says said go goes going come comes run runs "
    "walk walks play plays hold holds stand stands sit sits make makes take takes give gives turn turns "
    "camera scene frame clip footage screen text image picture color colour shape size speed left right "
    "top bottom middle center side front back inside outside of in at by for as it its they them he she "
    "we you i my your our their his her not very just also only still again more most less"
).split()
_FROM_TO = {"left": ("right", "left"), "right": ("left", "right"), "up": ("bottom", "top"),
            "down": ("top", "bottom")}


def _plural(shape: str, n: int) -> str:
    return shape if n == 1 else shape + "s"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _scene(rng: random.Random) -> dict[str, Any]:
    objs = []
    for _ in range(rng.randint(1, 2)):
        objs.append({"n": rng.randint(1, 3), "colour": rng.choice(_COLOURS),
                     "shape": rng.choice(_SHAPES), "dir": rng.choice(_DIRECTIONS)})
    return {"objects": objs, "background": rng.choice(_BACKGROUNDS)}


def _caption(scene: dict[str, Any], rng: random.Random) -> str:
    bg = scene["background"]
    sentences = []
    for o in scene["objects"]:
        n, colour, shape, d = o["n"], o["colour"], o["shape"], o["dir"]
        count = _COUNT_WORDS[n] if (n > 1 or rng.random() < 0.3) else _article(colour)
        subject = f"{count} {colour} {_plural(shape, n)}"
        verb = "is" if n == 1 else "are"
        src, dst = _FROM_TO[d]
        sentences.append(rng.choice([
            f"{subject.capitalize()} {verb} moving {d} across {_article(bg)} {bg} background.",
            f"The video shows {subject} moving {d} on {_article(bg)} {bg} background.",
            f"{subject.capitalize()} {verb} moving from the {src} to the {dst}.",
            f"In the video, {subject} {verb} moving {d} with a steady speed.",
        ]))
    total = sum(o["n"] for o in scene["objects"])
    noun = "object" if total == 1 else "objects"
    extra = [
        f"The background is {bg}.",
        f"There {'is' if total == 1 else 'are'} {_COUNT_WORDS.get(total, str(total))} {noun} in the video.",
        "No other objects appear in the video.",
        f"The {noun} {'stays' if total == 1 else 'stay'} in view for the whole video.",
        "The motion is smooth and the camera does not move.",
    ]
    rng.shuffle(extra)
    return " ".join(sentences + extra[: rng.randint(1, 4)])


def _query(scene: dict[str, Any], rng: random.Random) -> str:
    o = rng.choice(scene["objects"])
    bg = scene["background"]
    if rng.random() < 0.4:  # a query about a different video
        o = {"n": rng.randint(1, 3), "colour": rng.choice(_COLOURS), "shape": rng.choice(_SHAPES),
             "dir": rng.choice(_DIRECTIONS)}
        bg = rng.choice(_BACKGROUNDS)
    n, colour, shape, d = o["n"], o["colour"], o["shape"], o["dir"]
    count = _COUNT_WORDS[n] if n > 1 else _article(colour)
    return rng.choice([
        f"{colour} {shape} moving {d}",
        f"{count} {colour} {_plural(shape, n)} on {_article(bg)} {bg} background",
        f"video of {count} {colour} {_plural(shape, n)} moving {d}",
        f"a {shape} moving {d} across the {bg} background",
        f"{_COUNT_WORDS[n]} {_plural(shape, n)} moving from the {_FROM_TO[d][0]} to the {_FROM_TO[d][1]}",
        f"{colour} objects with {_article(bg)} {bg} background",
    ])


def _asr(scene: dict[str, Any], rng: random.Random) -> str:
    if rng.random() < 0.2:
        return ""
    o = rng.choice(scene["objects"])
    words: list[str] = []
    for _ in range(rng.randint(2, 5)):
        words.append(rng.choice(_FILLERS))
        words.append(rng.choice([
            f"the {o['colour']} {o['shape']}", f"it's moving {o['dir']}", "look at that",
            f"the {scene['background']} background", "there it goes", "okay so",
        ]))
    return " ".join(words)


def _relevant(scene: dict[str, Any], query: str) -> bool:
    return any(o["colour"] in query and o["shape"] in query for o in scene["objects"])


def _timestamps(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(2, 6)):
        parts.append(f"<{rng.randint(0, 40) / 2 + rng.choice([0.0, 0.2, 0.5, 0.7]):.1f} seconds>")
    return "".join(parts)


def _tokenizer_corpus(num_docs: int, seed: int) -> Iterator[str]:
    """Yield deterministic synthetic training documents (prompts, captions, answers...)."""
    rng = random.Random(seed)
    for i in range(num_docs):
        scene = _scene(rng)
        caption = _caption(scene, rng)
        query = _query(scene, rng)
        asr = _asr(scene, rng)
        rel = _relevant(scene, query)
        ans = "yes" if rel else "no"
        kind = i % 7
        if kind == 0:
            yield "system\n" + _SYS_RERANK + "\nuser\n" + _USER_RERANK.format(query=query) + "\nassistant\n"
        elif kind == 1:
            yield ("system\n" + _SYS_TRAIN + "\nuser\n" + _timestamps(rng) + _USER_TRAIN.format(query=query)
                   + f"\nassistant\n<answer>{ans}</answer>")
        elif kind == 2:
            yield "system\n" + _SYS_CAPTION + "\nuser\n" + _USER_CAPTION + f"\nassistant\n<think>{caption}</think>"
        elif kind == 3:
            verdict = "matches" if rel else "does not match"
            yield ("system\n" + _SYS_TEACHER + "\nuser\n"
                   + _USER_TEACHER.format(query=query, caption=caption, asr=asr)
                   + f"\nassistant\n<think>The query asks for {query}. The caption says: {caption} "
                   f"The evidence {verdict} the query, so the answer is {ans}.</think>"
                   f"<answer>{ans}</answer>")
        elif kind == 4:
            yield f"{caption}\n{asr}\n{query}"
        elif kind == 5:
            words = [rng.choice(_GENERIC) for _ in range(rng.randint(8, 30))]
            yield " ".join(words).capitalize() + rng.choice([".", "?", "!", ","]) + f" {query}."
        else:
            yield (f"Is the video relevant? {ans.capitalize()}. The answer is {ans}. {ans} {ans}\n"
                   f"Relevant: {ans}\nyes or no? {ans}\n{_timestamps(rng)}")


def build_tokenizer(tokenizer_vocab_size: int = 1024, tokenizer_seed: int = 1234,
                    tokenizer_num_docs: int = 3000):
    """Train the byte-level BPE and wrap it in a ``PreTrainedTokenizerFast`` with the chat template."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=tokenizer_vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    backend.train_from_iterator(_tokenizer_corpus(tokenizer_num_docs, tokenizer_seed), trainer=trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )
    for word in SINGLE_TOKEN_WORDS:
        ids = tok.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise RuntimeError(f"{word!r} is not a single token ({ids}); enlarge the tokenizer corpus/vocab")
    return tok


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------

def _resolve(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise TypeError(f"unknown size override(s) {unknown}; valid: {sorted(defaults)}")
    return {**defaults, **overrides}


def _model_vocab_size(tok, multiple: int) -> int:
    n = len(tok)
    return -(-n // multiple) * multiple


def _mrope_section(head_dim: int) -> list[int]:
    half = head_dim // 2
    side = half * 5 // 16  # Qwen3-VL: 64 -> [24, 20, 20]
    return [half - 2 * side, side, side]


def _generation_config(tok):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=False,
    )


def _init_model(model_cls, config, seed: int):
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    return model.eval()


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_tiny_vlm(output_dir: str | Path, seed: int = 0, **size_overrides: Any) -> Path:
    """Write a tiny Qwen3-VL model, processor and generation config to ``output_dir``."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl import Qwen3VLVideoProcessor

    p = _resolve(VLM_DEFAULTS, size_overrides)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = build_tokenizer(p["tokenizer_vocab_size"], p["tokenizer_seed"], p["tokenizer_num_docs"])
    logger.info("trained tokenizer: %d tokens (%.1f s)", len(tok), time.perf_counter() - t0)

    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = p["head_dim"]
    mrope = list(p["mrope_section"] or _mrope_section(head_dim))
    if sum(mrope) != head_dim // 2:
        raise ValueError(f"mrope_section {mrope} must sum to head_dim/2 = {head_dim // 2}")
    depth = p["vision_depth"]
    deepstack = p["deepstack_visual_indexes"]
    if deepstack is None:
        deepstack = list(range(min(depth, p["num_hidden_layers"])))
    deepstack = list(deepstack)
    if any(not 0 <= i < depth for i in deepstack):
        raise ValueError(f"deepstack_visual_indexes {deepstack} must be in [0, vision_depth={depth})")
    if len(deepstack) > p["num_hidden_layers"]:
        raise ValueError("more deepstack_visual_indexes than text layers to inject them into")
    side = round(p["num_position_embeddings"] ** 0.5)
    if side * side != p["num_position_embeddings"]:
        raise ValueError("num_position_embeddings must be a perfect square")

    text_config = {
        "vocab_size": _model_vocab_size(tok, p["vocab_multiple_of"]),
        **{k: p[k] for k in _TEXT_SIZE_DEFAULTS},
        "rope_parameters": {"rope_type": "default", "rope_theta": p["rope_theta"],
                            "mrope_section": mrope, "mrope_interleaved": True},
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    vision_config = {
        "depth": depth,
        "hidden_size": p["vision_hidden_size"],
        "intermediate_size": p["vision_intermediate_size"],
        "num_heads": p["vision_num_heads"],
        "patch_size": p["patch_size"],
        "temporal_patch_size": p["temporal_patch_size"],
        "spatial_merge_size": p["spatial_merge_size"],
        "out_hidden_size": p["hidden_size"],  # must equal the text hidden size
        "num_position_embeddings": p["num_position_embeddings"],
        "deepstack_visual_indexes": deepstack,
        "initializer_range": p["initializer_range"],
    }
    config = Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=p["tie_word_embeddings"],
    )
    model = _init_model(Qwen3VLForConditionalGeneration, config, seed)
    model.generation_config = _generation_config(tok)
    logger.info("built Qwen3-VL: %d parameters (seed %d)", _num_params(model), seed)

    common = {"patch_size": p["patch_size"], "temporal_patch_size": p["temporal_patch_size"],
              "merge_size": p["spatial_merge_size"], "image_mean": [0.5, 0.5, 0.5],
              "image_std": [0.5, 0.5, 0.5]}
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": 65536, "longest_edge": 16777216}, **common)
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": 4096, "longest_edge": 25165824},
        cap_pixels_per_frame=True,  # qwen-vl-utils' behaviour; also silences the per-call warning
        **common)
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tok,
                                 video_processor=video_processor, chat_template=CHAT_TEMPLATE)

    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    logger.info("saved tiny VLM to %s (%.1f s)", out, time.perf_counter() - t0)
    return out


def build_tiny_text_model(output_dir: str | Path, seed: int = 0, **size_overrides: Any) -> Path:
    """Write a tiny Qwen3 causal LM, tokenizer and generation config to ``output_dir``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    p = _resolve(TEXT_DEFAULTS, size_overrides)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok = build_tokenizer(p["tokenizer_vocab_size"], p["tokenizer_seed"], p["tokenizer_num_docs"])
    logger.info("trained tokenizer: %d tokens (%.1f s)", len(tok), time.perf_counter() - t0)

    config = Qwen3Config(
        vocab_size=_model_vocab_size(tok, p["vocab_multiple_of"]),
        **{k: p[k] for k in _TEXT_SIZE_DEFAULTS},
        rope_parameters={"rope_type": "default", "rope_theta": p["rope_theta"]},
        tie_word_embeddings=p["tie_word_embeddings"],
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
    )
    model = _init_model(Qwen3ForCausalLM, config, seed)
    model.generation_config = _generation_config(tok)
    logger.info("built Qwen3: %d parameters (seed %d)", _num_params(model), seed)

    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    logger.info("saved tiny text model to %s (%.1f s)", out, time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------

def build_tiny_omni(output_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen3-Omni (MoE thinker with vision and audio encoders, no talker) and its
    processor to ``output_dir``: the captioner's architecture, ~0.4 M parameters. Same tokenizer as
    :func:`build_tiny_vlm` plus Qwen's audio tokens; ``rankvideo.models.load_vlm`` loads its thinker,
    and vLLM (``backend: vllm``) loads it as ``Qwen3OmniMoeForConditionalGeneration`` (its thinker)."""
    from transformers import PreTrainedTokenizerFast, Qwen2VLImageProcessor, WhisperFeatureExtractor
    from transformers.models.qwen2_vl import Qwen2VLVideoProcessor
    from transformers.models.qwen3_omni_moe import (Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration,
                                                    Qwen3OmniMoeProcessor)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    p = VLM_DEFAULTS
    tok = build_tokenizer(p["tokenizer_vocab_size"], p["tokenizer_seed"], p["tokenizer_num_docs"])
    tok.add_special_tokens({"additional_special_tokens": ["<|audio_start|>", "<|audio_end|>", "<|audio_pad|>"]})
    # the Omni processor reads these names from its tokenizer; they survive a save/load round trip
    names = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "audio_token": "<|audio_pad|>",
             "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
             "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>"}
    tok.save_pretrained(out)
    tok = PreTrainedTokenizerFast.from_pretrained(out, extra_special_tokens=names)
    ids = tok.convert_tokens_to_ids
    hidden = 64
    text = dict(vocab_size=_model_vocab_size(tok, p["vocab_multiple_of"]), hidden_size=hidden, intermediate_size=128,
                moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=32,  # vLLM's CPU attention has no kernel for head_dim 16
                num_experts=4, num_experts_per_tok=2,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope_section(32),
                                 "mrope_interleaved": True},
                pad_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                tie_word_embeddings=False)  # vLLM reads it from the text config (the released checkpoint has it)
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, temporal_patch_size=2,
                  spatial_merge_size=2, out_hidden_size=hidden, num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
                  # read by vLLM's Qwen3-Omni (the released checkpoint has them; transformers' config class
                  # does not): a learned position table of (image_size / patch_size)^2 = 64 entries
                  image_size=8 * 16, apply_vit_abs_pos_embed=True)
    audio = dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=32,
                 output_dim=hidden, downsample_hidden_size=16)
    thinker = dict(text_config=text, vision_config=vision, audio_config=audio, audio_token_id=ids("<|audio_pad|>"),
                   image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                   vision_start_token_id=ids("<|vision_start|>"), audio_start_token_id=ids("<|audio_start|>"),
                   audio_end_token_id=ids("<|audio_end|>"),  # vLLM's audio-in-video positions read it
                   user_token_id=tok.encode("user", add_special_tokens=False)[0])
    config = Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False,
                                im_start_token_id=ids("<|im_start|>"), im_end_token_id=ids("<|im_end|>"))
    model = _init_model(Qwen3OmniMoeForConditionalGeneration, config, seed)
    model.generation_config = _generation_config(tok)
    logger.info("built Qwen3-Omni: %d parameters (seed %d)", _num_params(model), seed)
    common = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
              "image_std": [0.5, 0.5, 0.5]}
    processor = Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(cap_pixels_per_frame=True, **common),
        feature_extractor=WhisperFeatureExtractor(feature_size=128), tokenizer=tok, chat_template=CHAT_TEMPLATE)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    logger.info("saved tiny Qwen3-Omni to %s (%.1f s)", out, time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rankvideo.demo.tiny_model",
        description="Build a tiny random Qwen3-VL (vlm) or Qwen3 (text) model with a locally trained tokenizer.",
    )
    parser.add_argument("--kind", choices=["vlm", "text", "omni"], required=True)
    parser.add_argument("--output", required=True, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    build = {"vlm": build_tiny_vlm, "text": build_tiny_text_model, "omni": build_tiny_omni}[args.kind]
    build(args.output, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
