"""`red explain`'s page pieces: token labels (split characters, lone bytes, whitespace), the
ink chosen by the cell's luminance, the legend on both pages, and the cost rows of a run
with a cost model."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from red_cli.eval.explain import (
    COST_CMAP,
    COST_LEGEND,
    DARK_INK,
    LEGEND,
    LIGHT_INK,
    Sample,
    _font_chars,
    _hex,
    _hex_rgb,
    _rgb,
    byte_placeholder,
    bytes_label,
    contrast_ratio,
    ink_for,
    piece_text,
    png_label,
    relative_luminance,
    render_html,
    render_png,
    token_bytes,
    token_label,
    token_texts,
)


@pytest.fixture(scope="module")
def byte_bpe():
    """A byte-level BPE (GPT-2 style) whose merges split "😀" (F0 9F 98 80) into F0 9F | 98 80
    and leave "é" (C3 A9) as two lone bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for piece in ("ðŁ", "ĺĢ", "Ġg"):
        vocab[piece] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("ð", "Ł"), ("ĺ", "Ģ"), ("Ġ", "g")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_byte_placeholder():
    assert byte_placeholder(b"\xf0") == "⟨0xF0⟩"
    assert byte_placeholder(b"\xf0\x9f") == "⟨0xF0 0x9F⟩"


def test_split_emoji_shows_bytes_then_the_character(byte_bpe):
    ids = _ids(byte_bpe, "a😀 g")
    assert byte_bpe.convert_ids_to_tokens(ids) == ["a", "ðŁ", "ĺĢ", "Ġg"]
    assert [byte_bpe.decode([i]) for i in ids][1] == "\ufffd"  # what the page showed before
    assert token_texts("a😀 g", ids, byte_bpe) == ["a", "⟨0xF0 0x9F⟩", "😀", " g"]


def test_lone_byte_token(byte_bpe):
    ids = _ids(byte_bpe, "é")
    assert token_bytes(byte_bpe, ids[0]) == b"\xc3"
    assert token_texts("é", ids, byte_bpe) == ["⟨0xC3⟩", "é"]


def test_split_character_without_offsets(byte_bpe):
    """Ids that re-encoding would not give take the incremental-decoding spans: each byte
    piece is empty, the completing token holds the character."""
    ids = [byte_bpe.convert_tokens_to_ids(p) for p in ("a", "ð", "Ł", "ĺĢ")]
    assert token_texts("a😀", ids, byte_bpe) == ["a", "⟨0xF0⟩", "⟨0x9F⟩", "😀"]


def test_bytes_that_are_no_character(byte_bpe):
    """A sampled response can end a character early: its text holds U+FFFD, which the page
    shows as the bytes, not as the replacement character."""
    ids = [byte_bpe.convert_tokens_to_ids(p) for p in ("a", "ð", ".")]
    response = byte_bpe.decode(ids)
    assert response == "a\ufffd."
    texts = token_texts(response, ids, byte_bpe)
    assert texts == ["a", "⟨0xF0⟩", "."]
    assert bytes_label(b"ok\xe2.") == "ok⟨0xE2⟩."
    assert bytes_label(b"\xf0\x9f\x98\x80\xff\xfe") == "😀⟨0xFF 0xFE⟩"


def test_sentencepiece_byte_fallback_piece():
    class Fake:
        def convert_ids_to_tokens(self, tid):
            return {0: "<0xF0>", 1: "▁the"}[tid]

    assert token_bytes(Fake(), 0) == b"\xf0"
    assert token_bytes(Fake(), 1) is None  # not byte-level: bytes unknown


def test_piece_text():
    assert piece_text("", b"\xf0\x9f", "\ufffd") == "⟨0xF0 0x9F⟩"
    assert piece_text("x", b"x\xf0", "x\ufffd") == "x⟨0xF0⟩"  # a whole char, then a byte
    assert piece_text("", None, "\ufffd") == "⟨?⟩"  # bytes unknown


@pytest.mark.parametrize("token,label", [
    ("", "·"),
    (" ", "␣"),
    ("  ", "␣␣"),
    ("\n", "⏎"),
    ("\t", "⇥"),
    (" \n", "␣⏎"),
    (" the", " the"),      # one leading space is the gap between words: kept as a space
    ("  the", "␣␣the"),    # a run of them would vanish into the gap
    ("end.\n", "end.⏎"),
    ("a\tb", "a⇥b"),
    ("\ufffd", "⟨?⟩"),
    ("zero\u200bwidth", "zero⟨U+200B⟩width"),
    ("😀", "😀"),
    ("⟨0xF0⟩", "⟨0xF0⟩"),
])
def test_token_label(token, label):
    assert token_label(token) == label


def test_png_label_spells_out_glyphs_the_font_lacks():
    mono = _font_chars("DejaVu Sans Mono")
    assert png_label("😀!", mono) == "⟨U+1F600⟩!"
    assert png_label("  é\n", mono) == "␣␣é⏎"


def test_relative_luminance():
    assert relative_luminance((1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert relative_luminance((0.0, 0.0, 0.0)) == 0.0
    assert relative_luminance((0.5, 0.5, 0.5)) == pytest.approx(0.2140, abs=1e-4)
    assert contrast_ratio((1, 1, 1), (0, 0, 0)) == pytest.approx(21.0)


def test_ink_on_the_palette_extremes_and_midpoint():
    assert ink_for(_rgb(-1.0, 1.0)) == LIGHT_INK  # darkest red
    assert ink_for(_rgb(1.0, 1.0)) == LIGHT_INK   # darkest blue
    assert ink_for(_rgb(0.0, 1.0)) == DARK_INK    # white: the midpoint
    assert ink_for(_rgb(0.3, 1.0)) == DARK_INK and ink_for(_rgb(-0.3, 1.0)) == DARK_INK
    assert ink_for((1.0, 1.0, 0.6)) == DARK_INK   # a light yellow
    assert ink_for((0.2, 0.2, 0.2)) == LIGHT_INK


def test_ink_is_the_more_contrasting_one_everywhere_on_the_scale():
    for v in np.linspace(-1, 1, 201):
        cell = _rgb(float(v), 1.0)
        chosen = contrast_ratio(cell, _hex_rgb(ink_for(cell)))
        other = contrast_ratio(cell, _hex_rgb(LIGHT_INK if ink_for(cell) == DARK_INK
                                             else DARK_INK))
        assert chosen >= other
        assert chosen >= 4.3  # near WCAG AA (4.5) even at the crossover


def _sample() -> Sample:
    tokens = [" The", " ", "⟨0xF0 0x9F⟩", "😀", "\n", "", "."]
    return Sample(prompt="Review:", response="", tokens=tokens, score=0.8, gold=0.2,
                  prompt_score=-0.1,
                  rewards={"sparse": [0, 0, 0, 0, 0, 0, 0.8],
                           "td": [0.4, -0.2, 0.1, 0.3, 0.0, 0.0, 0.3]})


SETUP = {"policy": "toy:policy", "reward_model": "toy:reward", "prompts": "toy", "seed": 0}


class _Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[tuple[str, str]] = []
        self._style: str | None = None
        self.terms: list[str] = []
        self._in_dt = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("class") == "tok":
            self._style = attrs["style"]
        self._in_dt = tag == "dt"

    def handle_data(self, data):
        if self._style is not None:
            self.cells.append((data, self._style))
            self._style = None
        if self._in_dt:
            self.terms.append(data)
            self._in_dt = False


def test_html_legend_labels_and_ink():
    page_text = render_html([_sample()], SETUP, ["sparse", "td"])
    page = _Spans()
    page.feed(page_text)
    assert page.terms == [term for term, _ in LEGEND]
    assert "the largest |reward| of this sample over all modes" in page_text
    assert "first_token=prompt_baseline" in page_text and "r_C − R(x)" in page_text
    labels = [text for text, _ in page.cells]
    assert labels[:7] == [" The", "␣", "⟨0xF0 0x9F⟩", "😀", "⏎", "·", "."]
    assert "\ufffd" not in page_text
    # sparse's last token holds the whole score (+s: darkest blue) -> white ink; a zero cell
    # is white -> dark ink.
    assert page.cells[6][1].endswith(f"color:{LIGHT_INK}")
    assert page.cells[0][1].endswith(f"color:{DARK_INK}")


def test_png_renders(tmp_path):
    import matplotlib.image

    path = tmp_path / "credit.png"
    render_png([_sample(), _sample()], SETUP, ["sparse", "td"], path)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width == 1980 and height > 300


def _cost_sample() -> Sample:
    s = _sample()
    s.cost, s.gold_cost, s.prompt_cost = 1.5, 2.0, 0.2
    s.costs = {"sparse": [0, 0, 0, 0, 0, 0, 1.5], "td": [0.2, 0.0, 0.0, 1.0, 0.0, 0.0, 0.1]}
    return s


def test_html_cost_rows_under_the_reward_rows():
    page_text = render_html([_cost_sample()], {**SETUP, "cost_model": "toy:cost_model"},
                            ["sparse", "td"])
    page = _Spans()
    page.feed(page_text)
    assert page.terms == [term for term, _ in (*LEGEND, *COST_LEGEND)]
    # Rewards then costs, one column per mode each: 2 x 2 x 7 token cells.
    assert len(page.cells) == 2 * 2 * 7
    assert page_text.index("<h3>td <small>") < page_text.index(
        "<h3>sparse · cost <small>Σ = +1.500")
    assert "c_C = +1.500 · gold cost = 2 · C(x) = +0.200 · cost ±1.5" in page_text
    assert "cost model: toy:cost_model" in page_text and 'class="legend cost"' in page_text
    # Each row has its own scale and map: sparse's last token holds the whole score in both
    # rows (+s, +c), blue for the reward, orange for the cost.
    reward_last, cost_last = page.cells[6][1], page.cells[2 * 7 + 6][1]
    assert _hex(_rgb(1.0, 1.0)) in reward_last and _hex(_rgb(1.0, 1.0, COST_CMAP)) in cost_last
    r, _, b = _hex_rgb(_hex(_rgb(1.0, 1.0, COST_CMAP)))
    assert r > b  # harmful reads warm
    assert cost_last.endswith(f"color:{ink_for(_rgb(1.0, 1.0, COST_CMAP))}")
    # Without costs the page shows no trace of them.
    plain = render_html([_sample()], SETUP, ["sparse", "td"])
    assert "cost" not in plain.split("</style>")[1]


def test_png_with_costs_is_taller(tmp_path):
    import matplotlib.image

    heights = []
    for n, samples in enumerate(([_sample()], [_cost_sample()])):
        path = tmp_path / f"{n}.png"
        render_png(samples, {**SETUP, "cost_model": "toy:cost_model"}, ["sparse", "td"], path)
        heights.append(matplotlib.image.imread(path).shape[0])
    assert heights[1] > heights[0] + 50
