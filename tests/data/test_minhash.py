"""Chunked signatures equal datasketch's MinHash bit for bit; band keys; the text normaliser."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rlvr.data.minhash import as_datasketch, band_keys, signatures
from rlvr.data.text import normalized, shingles, tokens

datasketch = pytest.importorskip("datasketch")


@pytest.mark.parametrize(("ngram", "num_perm", "seed"), [(3, 128, 1), (1, 64, 7), (5, 256, 0)])
def test_signatures_equal_datasketch(ngram, num_perm, seed):
    rng = random.Random(seed)
    texts = [
        " ".join(rng.choice("abcdefghij") * rng.randint(1, 3) for _ in range(rng.randint(0, 40)))
        for _ in range(300)
    ]
    texts += ["", "x", "中文 文本 测试", "What is 2+3?"]
    sigs = signatures(texts, ngram=ngram, num_perm=num_perm, seed=seed)
    assert sigs.shape == (len(texts), num_perm) and sigs.dtype == np.uint32
    for text, sig in zip(texts, sigs):
        m = datasketch.MinHash(num_perm=num_perm, seed=seed)
        m.update_batch([s.encode() for s in set(shingles(tokens(text), ngram))])
        assert np.array_equal(m.hashvalues, sig), text
    a, b = as_datasketch(sigs[0], seed), as_datasketch(sigs[1], seed)
    assert a.jaccard(b) == pytest.approx(float(np.mean(sigs[0] == sigs[1])))


def test_band_keys_collide_exactly_when_bands_match():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(4, 12), dtype=np.uint32)
    sigs[1, :3] = sigs[0, :3]  # band 0 equal
    sigs[2, 3:6] = sigs[0, 3:6]  # band 1 equal
    sigs[3, :3] = sigs[0, 3:6]  # band 0 of row 3 equals band 1 of row 0: different bands, different keys
    keys = band_keys(sigs, 4, 3)
    assert keys.shape == (4, 4) and keys.dtype == np.uint64
    assert keys[1, 0] == keys[0, 0] and keys[2, 1] == keys[0, 1]
    assert len(set(keys.ravel().tolist())) == 16 - 2


def test_normaliser():
    assert normalized("What is 2+3?") == normalized("  what IS 2 + 3 ") == "what is 2 + 3"
    assert normalized("What is 2-3?") != normalized("What is 2+3?")
    assert tokens("3.5 and 1,000, then") == ["3.5", "and", "1,000", "then"]
    assert tokens("设x等于3") == ["设", "x", "等", "于", "3"]
    assert tokens("Ｆｕｌｌ “quotes”") == ["full", "quotes"]
    assert tokens(None) == [] and shingles([], 3) == [""] and shingles(["a", "b"], 3) == ["a b"]
