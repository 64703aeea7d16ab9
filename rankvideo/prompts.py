"""The one prompt module: every prompt that training and inference show a model comes from here.

Reranking prompts (:data:`RERANK_VARIANTS`):

- ``default``: the prompt stage 2 is trained with (REFERENCE.md), system, then the video, then the
  query. The assistant turn is prefilled with ``<answer>`` and the relevance score is read at the
  next position: exactly where training reads ``logit[yes] - logit[no]``. Video-first also lets a
  prefix cache share one video's tokens across all the queries it is a candidate for.
- ``query_first``: ``default``'s words and prefill with the query before the video, so that the
  video's tokens are read in the light of the query (no per-video prefix to share across queries:
  the HF backend scores it pair by pair).
- ``reference_inference``: the released inference prompt, byte for byte (query text first, then
  the video, other wording, no prefill; the score is read at the first assistant position), for
  checking published weights.

A variant can show a description of the video (``description=``; :data:`DESCRIPTION_LINE`) just
before the query text. Also here: the stage-1 caption prompt, the teacher's evidence prompt and the
answer-token sets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

SYSTEM_PREFIX = "You are a helpful assistant specialized in video and text understanding."

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
YES, NO = "yes", "no"


@dataclass(frozen=True)
class RerankPrompt:
    """One reranking prompt: system text, user template, content order and answer prefill."""

    name: str
    system: str
    user: str  # template with {query}
    video_first: bool
    answer_prefix: str  # appended after the generation prompt; the score is read right after it

    def user_text(self, query: str, description: str | None = None) -> str:
        """The user turn's text: the video's description line (when there is one), then the query's."""
        text = self.user.format(query=query)
        return text if description is None else DESCRIPTION_LINE.format(description=description) + text

    def user_content(self, query: str, video: Any = None, description: str | None = None) -> list[dict]:
        text = {"type": "text", "text": self.user_text(query, description)}
        video_item = {"type": "video", "video": video} if video is not None else {"type": "video"}
        return [video_item, text] if self.video_first else [text, video_item]

    def messages(self, query: str, video: Any = None, description: str | None = None) -> list[dict]:
        return [
            {"role": "system", "content": [{"type": "text", "text": self.system}]},
            {"role": "user", "content": self.user_content(query, video, description)},
        ]


_SYSTEM = f"{SYSTEM_PREFIX} Given a text query and a video, determine if the video is relevant."
_USER = "Query: {query}\nIs the video relevant? Answer with yes or no."

_DEFAULT = RerankPrompt(name="default", system=_SYSTEM, user=_USER, video_first=True, answer_prefix=ANSWER_OPEN)

RERANK_VARIANTS = {
    "default": _DEFAULT,
    "query_first": replace(_DEFAULT, name="query_first", video_first=False),
    "reference_inference": RerankPrompt(
        name="reference_inference",
        system=(f"{SYSTEM_PREFIX} Given a text query and a video, your task is to determine if the video is "
                "relevant to the query. Respond with <answer>yes</answer> if the video is relevant, or "
                "<answer>no</answer> if it is not. "),
        user="Query: {query}\nIs the video relevant to the query? Respond with <answer>yes</answer> or "
             "<answer>no</answer>.",
        video_first=False,
        answer_prefix="",
    ),
}


def rerank_prompt(variant: str = "default") -> RerankPrompt:
    try:
        return RERANK_VARIANTS[variant]
    except KeyError:
        raise ValueError(f"unknown prompt variant {variant!r}; known: {', '.join(RERANK_VARIANTS)}") from None


#: what comes before the query text when stage 2 reads a description of the video
#: (``descriptions.enabled``; not in REFERENCE.md): the stage-1 model's own caption of the video. It
#: comes *before* the query so that, under causal attention, each query word can look back for itself
#: in the description (after the query, only the answer position could compare the two; on the
#: held-out seed-14 benchmark the tiny model then checked two attributes of five:
#: research/results/stage2_variants.md, "fourth part").
DESCRIPTION_LINE = "Video description: {description}\n"
#: what a stage-2 training record says of a model trained with descriptions (``descriptions``), so that
#: a model trained by an older version (``true``: the description after the query) is refused, not
#: scored with a layout it never saw (:func:`rankvideo.scoring.rerank.needs_descriptions`)
DESCRIPTION_LAYOUT = "before_query"


def answer_text(relevant: bool) -> str:
    """The stage-2 training target."""
    return f"{ANSWER_OPEN}{YES if relevant else NO}{ANSWER_CLOSE}"


def render_rerank(processor_or_tokenizer, query: str, variant: str = "default", description: str | None = None) -> str:
    """The exact text a model sees for one (query, video) pair, up to the scored position; with the
    video's ``description`` (:data:`DESCRIPTION_LINE`) before the query when given. Training
    (:class:`rankvideo.training.stage2.PairCollator`) and every backend render through here.

    The video appears as the chat template renders it (one vision_start, video pad, vision_end);
    the processor expands the pad into the video's tokens.
    """
    prompt = rerank_prompt(variant)
    text = processor_or_tokenizer.apply_chat_template(prompt.messages(query, description=description), tokenize=False,
                                                      add_generation_prompt=True)
    return text + prompt.answer_prefix


# ----------------------------------------------------------------------------- stage 1: captions

CAPTION_SYSTEM = (f"{SYSTEM_PREFIX} Given a video, your task is to produce an accurate caption. "
                  "Respond within <think></think>")
CAPTION_USER = "Caption this video. Respond within <think></think>."


#: what the caption model (paper: Qwen3-Omni) is asked when it writes captions for the pipeline
CAPTIONER_USER = ("Describe this video in 3 to 6 factual sentences: what objects appear, their colours, shapes and "
                  "number, how they move, and the background.")


def captioner_messages(video: Any = None) -> list[dict]:
    video_item = {"type": "video", "video": video} if video is not None else {"type": "video"}
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PREFIX}]},
        {"role": "user", "content": [video_item, {"type": "text", "text": CAPTIONER_USER}]},
    ]


def caption_messages(video: Any = None) -> list[dict]:
    video_item = {"type": "video", "video": video} if video is not None else {"type": "video"}
    return [
        {"role": "system", "content": [{"type": "text", "text": CAPTION_SYSTEM}]},
        {"role": "user", "content": [video_item, {"type": "text", "text": CAPTION_USER}]},
    ]


def caption_target(caption: str) -> str:
    return f"{THINK_OPEN}{caption}{THINK_CLOSE}"


def caption_from_output(text: str) -> str:
    """The caption in a stage-1 model's answer (:func:`caption_target`'s think tags removed, spaces
    collapsed)."""
    return " ".join(text.replace(THINK_OPEN, " ").replace(THINK_CLOSE, " ").split())


# ----------------------------------------------------------------------------- teacher (text LLM)

TEACHER_SYSTEM = ("You are a careful assistant. Given a text query and evidence about a video (a caption and an "
                  "ASR transcript), decide whether the video is relevant to the query. Reason inside "
                  "<think></think>, then answer with <answer>yes</answer> or <answer>no</answer>.")
TEACHER_USER = "Query: {query}\n[Caption] {caption}\n[ASR] {asr}\nIs the video relevant to the query?"


def teacher_messages(query: str, caption: str, asr: str) -> list[dict]:
    """The teacher's chat: evidence as "[Caption] ...\\n[ASR] ..." (REFERENCE.md)."""
    return [
        {"role": "system", "content": TEACHER_SYSTEM},
        {"role": "user", "content": TEACHER_USER.format(query=query, caption=caption, asr=asr)},
    ]


def parse_teacher_output(text: str) -> tuple[str | None, str | None, int | None]:
    """(reasoning, text through ``<answer>``, label) of a teacher's output.

    ``reasoning`` is the text inside <think></think> (None if absent); the second item is the
    output up to and including the first ``<answer>`` (None when there is none: the answer is
    missing); ``label`` is 1 / 0 for an answer of yes / no and None when missing or malformed.
    """
    reasoning = None
    if THINK_OPEN in text and THINK_CLOSE in text.split(THINK_OPEN, 1)[1]:
        reasoning = text.split(THINK_OPEN, 1)[1].split(THINK_CLOSE, 1)[0].strip()
    if ANSWER_OPEN not in text:
        return reasoning, None, None
    head, tail = text.split(ANSWER_OPEN, 1)
    answer = tail.split(ANSWER_CLOSE, 1)[0].strip().lower() if ANSWER_CLOSE in tail else None
    label = {YES: 1, NO: 0}.get(answer) if answer is not None else None
    return reasoning, head + ANSWER_OPEN, label


# ----------------------------------------------------------------------------- answer tokens


#: which answer tokens inference reads: ``variants``, every token that decodes to yes / no (the
#: reference's inference); ``single``, the one "yes" and one "no" id that stage 2 trains, so the
#: score is exactly the trained ``logit[yes] - logit[no]``; ``auto``, single for a stage-2 folder
#: made by this project and variants otherwise (:func:`rankvideo.scoring.rerank.resolve_answer_tokens`)
ANSWER_TOKENS = ("auto", "variants", "single")


@lru_cache(maxsize=8)
def answer_token_ids(tokenizer, mode: str = "variants") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The yes and no ids whose log-probabilities inference sums (``mode``: see ANSWER_TOKENS).

    ``variants``: every vocabulary id whose decoded text, stripped and lower-cased, is "yes" / "no";
    inference scores ``logsumexp(logp[yes ids]) - logsumexp(logp[no ids])`` over these sets, as the
    reference does. A model trained on the single ids only (stage 2) leaves the other variants
    untrained, and their mass dilutes that score; ``single`` reads the trained ids alone.
    """
    if mode == "single":
        yes_id, no_id = single_answer_ids(tokenizer)
        return (yes_id,), (no_id,)
    if mode != "variants":
        raise ValueError(f"answer tokens must be variants or single here, not {mode!r}")
    yes, no = [], []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip().lower()
        if text == YES:
            yes.append(token_id)
        elif text == NO:
            no.append(token_id)
    if not yes or not no:
        raise ValueError(f"the tokenizer has no token that decodes to {'yes' if not yes else 'no'}")
    return tuple(yes), tuple(no)


def single_answer_ids(tokenizer) -> tuple[int, int]:
    """The single ids of "yes" and "no" that training scores (``logit[yes] - logit[no]``)."""
    ids = []
    for word in (YES, NO):
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"{word!r} is not a single token in this tokenizer: {encoded}")
        ids.append(encoded[0])
    return ids[0], ids[1]
