import pytest

from rlvr.algorithms import advantages, aggregate, kl, objectives
from rlvr.algorithms.registry import (
    ADVANTAGES,
    AGGREGATIONS,
    KINDS,
    KL_ESTIMATORS,
    OBJECTIVES,
    resolve,
    validate_name,
)


def test_tables_hold_the_contract_names():
    assert ADVANTAGES["grpo"] is advantages.grpo and ADVANTAGES["rloo"] is advantages.rloo
    assert OBJECTIVES["ppo_clip"] is objectives.ppo_clip and OBJECTIVES["gspo"] is objectives.gspo
    assert KL_ESTIMATORS["k3"] is kl.kl_k3
    assert set(AGGREGATIONS) == {"token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"}
    assert AGGREGATIONS["token_mean"] is aggregate.token_mean


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_table_name_resolves(kind):
    for name, fn in KINDS[kind].items():
        assert resolve(kind, name) is fn
        validate_name(kind, name)


def test_escape_hatch_imports_user_functions():
    assert resolve("advantage", "rlvr.algorithms.advantages:grpo") is advantages.grpo
    assert resolve("objectives", "rlvr.algorithms.objectives:cispo") is objectives.cispo  # plural alias
    import os.path

    assert resolve("kl", "os.path:join") is os.path.join  # dotted module, any callable


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("advantage", "grpoo", r"choose one of \['dr_grpo', 'grpo'"),
        ("objective", "no_such_pkg_xyz.mod:fn", "cannot import module"),
        ("objective", "rlvr.algorithms.objectives:nope", "has no attribute"),
        ("kl", "math:pi", "not a function"),
        ("kl", "math:", "package.module:function"),
        ("optimizer", "adam", r"choose one of \['advantage', 'aggregation', 'kl', 'objective', 'preference'\]"),
    ],
)
def test_errors_name_the_choices(kind, name, message):
    with pytest.raises(ValueError, match=message):
        validate_name(kind, name)


@pytest.mark.parametrize("module", [advantages, objectives, kl, aggregate])
def test_every_public_function_has_a_docstring(module):
    import rlvr.algorithms.correction as correction
    import rlvr.algorithms.logprobs as logprobs

    for mod in (module, correction, logprobs):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if callable(obj):
                assert obj.__doc__ and len(obj.__doc__) > 30, f"{mod.__name__}.{name} needs a docstring"
