import pytest
import torch
from torch.testing import assert_close

from rlvr.algorithms import advantages as A

# Interleaved, unsorted, non-contiguous group ids: group 7 = {0, 2, 4, 6}, group 3 = {1}, group -1 = {3, 5}.
IDS = torch.tensor([7, 3, 7, -1, 7, -1, 7])
REWARDS = torch.tensor([1.0, 2.0, 0.0, 0.5, 0.0, 0.5, 1.0])


def test_grpo_hand_values():
    # group 7: rewards 1,0,0,1 -> mean 0.5, deviations +-0.5
    #   unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.5773503, adv = +-0.5 / 0.5773503 = +-0.8660254
    # group 3: a single sample -> 0;  group -1: rewards 0.5, 0.5 -> zero variance -> 0
    a = 0.5 / (3**-0.5 + 1e-6)
    expected = torch.tensor([a, 0.0, -a, 0.0, -a, 0.0, a])
    assert_close(A.grpo(REWARDS, IDS), expected)


def test_grpo_unscaled_and_dr_grpo_are_mean_centred():
    # group 7: r - 0.5 = +-0.5; others 0
    expected = torch.tensor([0.5, 0.0, -0.5, 0.0, -0.5, 0.0, 0.5])
    assert_close(A.grpo(REWARDS, IDS, scale=False), expected)
    assert_close(A.dr_grpo(REWARDS, IDS), expected)


def test_rloo_hand_values():
    # group {1, 0, 0}: 1 - mean(0, 0) = 1;  0 - mean(1, 0) = -0.5 (twice);  single sample -> 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 5.0])
    ids = torch.tensor([4, 4, 4, 9])
    assert_close(A.rloo(rewards, ids), torch.tensor([1.0, -0.5, -0.5, 0.0]))


def test_reinforce_pp_hand_values():
    # batch 0,1,2,3: mean 1.5, population std sqrt((2.25+0.25+0.25+2.25)/4) = sqrt(1.25) = 1.1180340
    # adv = (r - 1.5) / 1.1180340 = -1.3416408, -0.4472136, 0.4472136, 1.3416408 (groups ignored)
    rewards = torch.tensor([0.0, 1.0, 2.0, 3.0])
    expected = torch.tensor([-1.3416408, -0.4472136, 0.4472136, 1.3416408])
    assert_close(A.reinforce_pp(rewards, torch.tensor([0, 0, 1, 1])), expected, atol=1e-5, rtol=0)


def test_reinforce_pp_baseline_hand_values():
    # group means 0.5 and 3 -> centred 0.5, -0.5, 0, 0; batch mean 0, population std sqrt(0.5/4) = 0.3535534
    # adv = centred / 0.3535534 = 1.4142136, -1.4142136, 0, 0
    rewards = torch.tensor([1.0, 0.0, 3.0, 3.0])
    expected = torch.tensor([1.4142136, -1.4142136, 0.0, 0.0])
    assert_close(A.reinforce_pp_baseline(rewards, torch.tensor([0, 0, 1, 1])), expected, atol=1e-5, rtol=0)


OUTCOME = [A.grpo, A.dr_grpo, A.rloo, A.reinforce_pp, A.reinforce_pp_baseline]


@pytest.mark.parametrize("fn", OUTCOME)
def test_all_equal_rewards_give_exact_zero(fn):
    # 0.1 is not exact in binary: a floating mean would leave ~1e-9 residues, which std-scaling
    # would blow up to O(1e-3); the estimators must detect the constant group and return 0 exactly.
    rewards = torch.full((6,), 0.1)
    out = fn(rewards, torch.tensor([2, 2, 2, 5, 5, 5]))
    assert torch.equal(out, torch.zeros(6))


@pytest.mark.parametrize("fn", [A.grpo, A.dr_grpo, A.rloo])
def test_single_sample_groups_give_zero(fn):
    out = fn(torch.tensor([1.0, 0.0, 3.0]), torch.tensor([10, 11, 12]))
    assert torch.equal(out, torch.zeros(3))


@pytest.mark.parametrize("fn", OUTCOME)
def test_empty_batch(fn):
    assert fn(torch.zeros(0), torch.zeros(0, dtype=torch.long)).shape == (0,)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="group_ids"):
        A.grpo(torch.zeros(3), torch.zeros(4, dtype=torch.long))


def _random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 40, (1,), generator=g))
    pool = torch.randint(-1000, 1000, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g)
    ids = pool[torch.randint(0, pool.numel(), (n,), generator=g)]
    if seed % 2:  # binary rewards: many zero-variance groups
        rewards = torch.randint(0, 2, (n,), generator=g).double()
    else:
        rewards = torch.randn(n, generator=g, dtype=torch.float64)
    return rewards, ids


@pytest.mark.parametrize("seed", range(24))
def test_vectorised_equals_loop_spec(seed):
    rewards, ids = _random_batch(seed)
    assert_close(A.grpo(rewards, ids), A._grpo_loop(rewards, ids))
    assert_close(A.grpo(rewards, ids, scale=False), A._grpo_loop(rewards, ids, scale=False))
    assert_close(A.dr_grpo(rewards, ids), A._grpo_loop(rewards, ids, scale=False))
    assert_close(A.rloo(rewards, ids), A._rloo_loop(rewards, ids))
    assert_close(A.reinforce_pp(rewards, ids), A._reinforce_pp_loop(rewards, ids))
    assert_close(A.reinforce_pp_baseline(rewards, ids), A._reinforce_pp_baseline_loop(rewards, ids))
    assert torch.isfinite(A.grpo(rewards, ids)).all()


def test_zero_variance_frac():
    # groups: {1, 1} constant, {0, 1} not, {3} single (constant) -> 2 of 3 groups
    rewards = torch.tensor([1.0, 0.0, 1.0, 3.0, 1.0])
    ids = torch.tensor([0, 1, 0, 2, 1])
    assert_close(A.zero_variance_frac(rewards, ids), torch.tensor(2 / 3))


def test_token_rewards_with_kl_hand_values():
    # beta 0.5: -0.5*kl at valid tokens, + reward at the last valid token; fully masked row -> zeros
    # row 0: [-0.05, -0.1 + 1, 0];  row 1: [-0.2, -0.25, -0.3 + 2];  row 2: zeros
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    out = A.token_rewards_with_kl(torch.tensor([1.0, 2.0, 5.0]), kl, mask, beta=0.5)
    assert_close(out, torch.tensor([[-0.05, 0.9, 0.0], [-0.2, -0.25, 1.7], [0.0, 0.0, 0.0]]))


def test_gae_hand_values():
    # rewards [0, 0, 1], values [0.5, 0.6, 0.7], gamma 0.9, lam 0.5 (gamma*lam = 0.45):
    #   A2 = 1 - 0.7 = 0.3
    #   A1 = (0.9*0.7 - 0.6) + 0.45*0.3 = 0.03 + 0.135 = 0.165
    #   A0 = (0.9*0.6 - 0.5) + 0.45*0.165 = 0.04 + 0.07425 = 0.11425
    #   returns = A + V = [0.61425, 0.765, 1.0]
    r, v = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = A.gae(r, v, torch.ones(1, 3, dtype=torch.bool), gamma=0.9, lam=0.5)
    assert_close(adv, torch.tensor([[0.11425, 0.165, 0.3]]))
    assert_close(ret, torch.tensor([[0.61425, 0.765, 1.0]]))
    # gamma = lam = 1: returns are the sum of future rewards (= 1 everywhere), A = 1 - V
    adv, ret = A.gae(r, v, torch.ones(1, 3, dtype=torch.bool), gamma=1.0, lam=1.0)
    assert_close(adv, torch.tensor([[0.5, 0.4, 0.3]]))
    assert_close(ret, torch.ones(1, 3))


def test_gae_skips_padding_on_either_side():
    # the same 3-token episode, right-padded and left-padded, gives the same advantages there
    r, v = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.5, 0.6, 0.7])
    ref, _ = A.gae(r[None], v[None], torch.ones(1, 3, dtype=torch.bool), gamma=0.9, lam=0.5)
    junk = torch.tensor([9.0])
    right = A.gae(torch.cat([r, junk])[None], torch.cat([v, junk])[None], torch.tensor([[1, 1, 1, 0]]).bool(),
                  gamma=0.9, lam=0.5)  # fmt: skip
    left = A.gae(torch.cat([junk, r])[None], torch.cat([junk, v])[None], torch.tensor([[0, 1, 1, 1]]).bool(),
                 gamma=0.9, lam=0.5)  # fmt: skip
    assert_close(right[0][0, :3], ref[0])
    assert_close(left[0][0, 1:], ref[0])
    assert right[0][0, 3] == 0 and left[0][0, 0] == 0 and right[1][0, 3] == 0


@pytest.mark.parametrize("seed", range(8))
def test_gae_equals_loop_spec(seed):
    g = torch.Generator().manual_seed(seed)
    B, T = int(torch.randint(1, 5, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
    r = torch.randn(B, T, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) < 0.7
    got = A.gae(r, v, mask, gamma=0.95, lam=0.9)
    want = A._gae_loop(r, v, mask, gamma=0.95, lam=0.9)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
