"""Layouts, 2D positions and masks from glm_hf.model.blank_infilling."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glm_hf.model.blank_infilling import (
    build_attention_mask,
    build_position_ids,
    generation_layout,
    infilling_example,
    next_position_ids,
    part_a_length,
)
from tests.helpers.tiny import GMASK, MASK, PAD, SMASK, SOP

BLANKS = [MASK, SMASK, GMASK]
EOP = 8


def test_positions_follow_the_2d_rule():
    ids = torch.tensor([[10, 11, MASK, 12, SOP, 20, 21]])
    positions = build_position_ids(ids, BLANKS, SOP)
    assert positions.tolist() == [[[0, 1, 2, 3, 2, 2, 2], [0, 0, 0, 0, 1, 2, 3]]]


def test_kth_span_goes_to_kth_blank():
    ids = torch.tensor([[MASK, 10, SMASK, 11, SOP, 20, SOP, 21, 22]])
    positions = build_position_ids(ids, BLANKS, SOP)
    assert positions[0, 0].tolist() == [0, 1, 2, 3, 0, 0, 2, 2, 2]
    assert positions[0, 1].tolist() == [0, 0, 0, 0, 1, 2, 1, 2, 3]


def test_left_padding_does_not_shift_positions():
    ids = torch.tensor([[PAD, PAD, 10, MASK, SOP, 20], [12, 13, 10, MASK, SOP, 20]])
    padding = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    positions = build_position_ids(ids, BLANKS, SOP, padding)
    assert positions[0, :, 2:].tolist() == [[0, 1, 1, 1], [0, 0, 1, 2]]
    assert positions[1].tolist() == [[0, 1, 2, 3, 3, 3], [0, 0, 0, 0, 1, 2]]


def test_more_spans_than_blanks_is_an_error():
    ids = torch.tensor([[10, MASK, SOP, 20, SOP, 21]])
    with pytest.raises(ValueError, match="2 Part B spans .* only 1 blank"):
        build_position_ids(ids, BLANKS, SOP)


def test_part_a_length_without_part_b_is_the_row_length():
    ids = torch.tensor([[10, 11, MASK], [10, SOP, 11]])
    assert part_a_length(ids, SOP).tolist() == [3, 1]


def test_mask_is_a_bidirectional_and_b_causal():
    mask = build_attention_mask(torch.tensor([3]), query_length=5, key_length=5)[0, 0]
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_mask_with_cache_offset_and_padding():
    padding = torch.tensor([[0, 1, 1, 1, 1]])
    mask = build_attention_mask(torch.tensor([3]), query_length=2, key_length=5, padding_mask=padding, query_offset=3)
    assert mask[0, 0].int().tolist() == [[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]]


def test_padding_query_rows_are_never_empty():
    padding = torch.tensor([[0, 0, 1, 1]])
    mask = build_attention_mask(torch.tensor([0]), query_length=4, key_length=4, padding_mask=padding)
    assert mask.any(-1).all()


def test_next_position_ids_keep_position_and_advance_block():
    positions = torch.tensor([[[0, 1, 1], [0, 0, 1]]])
    assert next_position_ids(positions, 2).tolist() == [[[1, 1], [2, 3]]]


def test_generation_layout_appends_sop_once():
    ids = torch.tensor([[10, MASK, 11]])
    layout = generation_layout(ids, BLANKS, SOP)
    assert layout.input_ids.tolist() == [[10, MASK, 11, SOP]]
    assert layout.position_ids.tolist() == [[[0, 1, 2, 1], [0, 0, 0, 1]]]
    again = generation_layout(layout.input_ids, BLANKS, SOP)
    assert again.input_ids.tolist() == layout.input_ids.tolist()


def test_generation_layout_rejects_missing_blank_and_right_padding():
    with pytest.raises(ValueError, match="no blank to fill"):
        generation_layout(torch.tensor([[10, 11]]), BLANKS, SOP)
    with pytest.raises(ValueError, match="left-padded"):
        generation_layout(torch.tensor([[10, MASK, PAD]]), BLANKS, SOP, torch.tensor([[1, 1, 0]]))


def test_infilling_example_layout():
    example = infilling_example([10, MASK, 11, MASK], [[20, 21], [22]], BLANKS, SOP, EOP, span_blanks=[3, 1])
    assert example["input_ids"] == [10, MASK, 11, MASK, SOP, 20, 21, SOP, 22]
    assert example["labels"] == [-100] * 4 + [20, 21, EOP, 22, EOP]
    assert example["position_ids"] == [[0, 1, 2, 3, 3, 3, 3, 1, 1], [0, 0, 0, 0, 1, 2, 3, 1, 2]]
    assert example["sep"] == 4


def test_infilling_example_rejects_bad_span_blanks():
    with pytest.raises(ValueError, match="one blank of Part A"):
        infilling_example([10, MASK], [[20]], BLANKS, SOP, EOP, span_blanks=[0])


@st.composite
def layouts(draw):
    """Random Part A with blanks and spans filling them in order."""
    length_a = draw(st.integers(1, 12))
    part_a = draw(st.lists(st.integers(9, 50), min_size=length_a, max_size=length_a))
    blank_slots = sorted(draw(st.sets(st.integers(0, length_a - 1), max_size=length_a)))
    for slot in blank_slots:
        part_a[slot] = draw(st.sampled_from(BLANKS))
    spans = [draw(st.lists(st.integers(9, 50), min_size=0, max_size=4)) for _ in blank_slots]
    return part_a, spans


@settings(max_examples=60, deadline=None)
@given(layouts())
def test_derived_positions_and_mask_match_the_example_builder(layout):
    part_a, spans = layout
    example = infilling_example(part_a, spans, BLANKS, SOP, EOP)
    ids = torch.tensor([example["input_ids"]])
    assert build_position_ids(ids, BLANKS, SOP)[0].tolist() == example["position_ids"]
    sep = part_a_length(ids, SOP)
    assert sep.tolist() == [example["sep"]]
    mask = build_attention_mask(sep, ids.shape[1], ids.shape[1])[0, 0]
    n = ids.shape[1]
    for q in range(n):
        for k in range(n):
            assert bool(mask[q, k]) == (k < example["sep"] or k <= q)
