"""RL maths as pure tensor functions (layer L2): advantages, objectives, KL, aggregation, IS correction.

Tensor in, tensor out: no model, no config object, no `.item()`, no torch.distributed.  Look
functions up by name through `rlvr.algorithms.registry.resolve(kind, name)`.
"""
