"""Small pieces of the toy build's training code: preferences, batching, padding."""

import math

import torch

from red_cli.toy import train


def test_preference_matrix_orders_by_gold_and_skips_ties():
    pref = train.preference_matrix([0.5, -0.2, 0.5])
    # pairs (0,1): 0 wins; (0,2): tie, no label; (1,2): 2 wins
    assert pref == [[0, 1, 0], [0, 0, 0], [0, 1, 0]]


def test_label_noise_flips_the_chosen_pairs_only():
    pref = train.preference_matrix([0.9, 0.1, -0.5], flip=[False, True, False])
    # pairs in row-major order: (0,1) kept, (0,2) flipped, (1,2) kept
    assert pref == [[0, 1, 0], [0, 0, 1], [1, 0, 0]]


def test_pad_batch_right_pads_with_a_mask():
    ids, mask = train.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_schedule_warms_up_then_decays_to_a_tenth():
    f = train._schedule(warmup=10, total=110)
    assert math.isclose(f(0), 0.1) and math.isclose(f(9), 1.0)
    assert math.isclose(f(10), 1.0)
    assert math.isclose(f(110), 0.1) and f(60) < f(30)


def test_batches_cover_an_epoch_once_and_are_seeded():
    lengths = [i % 7 for i in range(100)]

    def epoch(seed):
        batches = train._Batches(lengths, 10, torch.Generator().manual_seed(seed))
        return [batches.next() for _ in range(10)]

    first = epoch(0)
    assert sorted(i for b in first for i in b) == list(range(100))
    assert first == epoch(0) and first != epoch(1)
    # each batch comes from one length-sorted window: little padding
    assert all(max(lengths[i] for i in b) - min(lengths[i] for i in b) <= 1 for b in first)
