"""DPO-Diff search spaces: tables, single-token filtering with real tokenizers, the MiniLM constraint, LLM parsing."""

from __future__ import annotations

import pytest

from tests.safety.fakes import ScriptedModel
from trustlab.errors import EmptyInputError, ParseError
from trustlab.prompting.dpo_diff_space import NPLIB, SearchSpace, SearchSpaceError, parse_table
from trustlab.prompting.dpo_diff_tiny import word_tokenizer


@pytest.fixture(scope="module")
def bert_tokenizer():
    from transformers import AutoTokenizer

    from trustlab.models.embedded import MINILM

    return AutoTokenizer.from_pretrained(str(MINILM.path()))


def test_antonym_space_builds_negative_prompts():
    space = SearchSpace.from_tables("a photo of a seven", {"seven": ["one", "four", "seven", "one"]}, kind="antonym",
                                    tokenizer=word_tokenizer())
    assert space.sizes == (3,)  # "" + one + four; the word itself and the duplicate are dropped
    assert space.slots[0].options == ("", "one", "four")
    assert space.dropped["duplicate"] == 2
    assert space.prompts((0,)) == ("a photo of a seven", "")
    assert space.prompts((2,)) == ("a photo of a seven", "four")


def test_single_token_filter_with_real_tokenizers(bert_tokenizer):
    tiny = SearchSpace.from_tables("a photo of a seven", {"seven": ["one", "sneaker", "eight"]}, tokenizer=word_tokenizer())
    assert tiny.slots[0].options == ("", "one", "eight")  # "sneaker" is <unk> for the word-level tokenizer
    bert = SearchSpace.from_tables("a photo of a dog", {"dog": ["cat", "sneaker"]}, tokenizer=bert_tokenizer)
    assert bert.slots[0].options == ("", "cat")  # "sneaker" is two WordPiece tokens
    assert bert.dropped["multi_token"] == 1


def test_synonym_space_keeps_meaning_under_minilm(bert_tokenizer):
    table = {"dog": ["puppy", "banana"], "big": ["large", "huge"], "photo": ["picture", "sneaker"]}
    space = SearchSpace.from_tables("a photo of a big dog", table, kind="synonym", tokenizer=bert_tokenizer)
    by_word = {s.word: s.options for s in space.slots}
    assert by_word == {"photo": ("photo", "picture"), "big": ("big", "large", "huge")}  # dog: all fell below 0.9
    assert space.dropped["cosine"] == 2 and space.dropped["multi_token"] == 1
    genome = (1, 2)  # photo -> picture, big -> huge
    assert space.prompts(genome) == ("a picture of a huge dog", "")
    assert space.segments(genome)[0] == ["a", 0, "of", "a", 1, "dog"]


def test_nplib_space_has_four_slots():
    space = SearchSpace.from_tables("a photo of a seven", {}, kind="nplib")
    assert space.sizes == tuple(len(s) + 1 for s in NPLIB)
    assert space.prompts((1, 0, 0, 3))[1] == "blurry, watermark"


def test_bad_input_is_a_clear_error():
    with pytest.raises(EmptyInputError):
        SearchSpace.from_tables("  ", {"a": ["b"]})
    with pytest.raises(SearchSpaceError, match="kind"):
        SearchSpace.from_tables("a dog", {"dog": ["cat"]}, kind="homonym")
    with pytest.raises(SearchSpaceError, match="no word"):
        SearchSpace.from_tables("a dog", {"horse": ["cow"]})
    space = SearchSpace.from_tables("a dog", {"dog": ["cat"]}, sentence_encoder=None)
    with pytest.raises(SearchSpaceError, match="does not fit"):
        space.prompts((2,))


def test_parse_table_is_defensive():
    words = ["a", "big", "dog"]
    assert parse_table('Sure: {"big": ["small", 3, "tiny"], "cat": ["x"]}', words) == {"big": ["small", "tiny"]}
    assert parse_table("big: small, tiny.\ndog: cat", words) == {"big": ["small", "tiny"], "dog": ["cat"]}
    assert parse_table("__import__('os').system('false') {not json}", words) == {}
    assert parse_table('{"big": "small"}', words) == {}  # candidates must be a list


def test_from_llm_retries_and_counts_invalid():
    answers = iter(["I cannot help with that.", '{"seven": ["one", "eight", "sneaker"]}'])
    model = ScriptedModel(lambda prompt: next(answers))
    space = SearchSpace.from_llm("a photo of a seven", model, kind="antonym", tokenizer=word_tokenizer())
    assert (space.invalid, space.asked) == (1, 2)
    assert space.slots[0].options == ("", "one", "eight")
    assert "a photo of a seven" in model.asked[0][0]


def test_from_llm_gives_up_with_a_parse_error():
    model = ScriptedModel(lambda prompt: '{"seven": []}')
    with pytest.raises(ParseError, match="3 invalid"):
        SearchSpace.from_llm("a photo of a seven", model, kind="antonym")
    with pytest.raises(SearchSpaceError):
        SearchSpace.from_llm("a photo of a seven", model, kind="nplib")


def test_from_llm_with_the_embedded_smollm2(smollm, bert_tokenizer):
    """The real embedded model proposes antonyms that parse (greedy answer; measured: big -> small, tiny)."""
    space = SearchSpace.from_llm("a photo of a big dog", smollm, kind="antonym", tokenizer=bert_tokenizer,
                                 max_new_tokens=96)
    assert space.asked - space.invalid == 1
    big = {s.word: s.options for s in space.slots}.get("big", ())
    assert big[:1] == ("",) and "small" in big
