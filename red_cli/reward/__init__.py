"""Reward models read for PPO: scoring (``scoring``, ``attention_row``), the map onto policy
tokens (``align``), score shaping (``shaping``), loading (``stack``) and the pipeline that ties
them together for one rollout (``pipeline``)."""
