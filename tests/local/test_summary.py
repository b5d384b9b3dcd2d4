"""How `kubetune report` shows a sample answer's texts: one terminal line each."""

from kubetune.local.summary import SHOWN_CHARS, shown


def test_whitespace_becomes_one_space_and_control_codes_cannot_reach_the_terminal():
    assert shown("Question:\n\n  what?\t") == "Question: what?"
    assert shown("red \x1b[2Jcat\x07") == "red \ufffd[2Jcat\ufffd"  # no screen clear, no bell


def test_long_texts_are_cut_and_a_prompt_keeps_its_end():
    text = " ".join(f"w{i}" for i in range(100))
    head, tail = shown(text), shown(text, tail=True)
    assert len(head) == len(tail) == SHOWN_CHARS
    assert head.startswith("w0 w1 ") and head.endswith("...")
    assert tail.startswith("...") and tail.endswith("w98 w99")
    assert shown("short", tail=True) == "short"
