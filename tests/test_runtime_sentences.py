"""Streaming sentence splitting (reference_runtime.sentences)."""

from __future__ import annotations

from reference_runtime.sentences import SentenceSplitter, split_sentences


def test_split_on_terminal_punctuation_followed_by_space() -> None:
    assert split_sentences("Hello there! How are you? I am fine.") == [
        "Hello there!",
        "How are you?",
        "I am fine.",
    ]


def test_streamed_tokens_give_each_sentence_as_soon_as_it_is_complete() -> None:
    splitter = SentenceSplitter()
    out = []
    for token in ["Sure", ",", " Tuesday", " works", ".", " Shall", " I", " book", " it", "?"]:
        out.append(splitter.push(token))
    # "works." is complete only once the following whitespace arrives
    assert [s for batch in out for s in batch] == ["Sure, Tuesday works."]
    assert splitter.flush() == "Shall I book it?"
    assert splitter.flush() is None


def test_abbreviations_initials_and_decimals_do_not_split() -> None:
    text = "Dr. Smith sees you at 3.30 pm, e.g. on Tuesday. J. Doe is off. So am I. Bye"
    assert split_sentences(text) == [
        "Dr. Smith sees you at 3.30 pm, e.g. on Tuesday.",
        "J. Doe is off.",
        "So am I.",
        "Bye",
    ]


def test_closing_quotes_stay_with_their_sentence_and_newlines_split() -> None:
    assert split_sentences('He said "yes." Then left\nNew line') == [
        'He said "yes."',
        "Then left",
        "New line",
    ]


def test_ellipsis_and_repeated_marks() -> None:
    assert split_sentences("Well... maybe?! Okay") == ["Well...", "maybe?!", "Okay"]
