import importlib.util

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.skip(reason="slow: run with --runslow (CI does)")
    no_vllm = pytest.mark.skip(reason="needs vLLM (CI runs these in its vLLM environment, see .ci/run)")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(slow)
        if "vllm" in item.keywords and not HAVE_VLLM:
            item.add_marker(no_vllm)
