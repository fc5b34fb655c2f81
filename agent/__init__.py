"""The observer: policies that choose actions, collectors that step vectorised envs, and
the stores their transitions land in (the shared-memory replay buffer for live training,
dataset shards for offline training), with the pair sampling both share. Numpy only: the
learner's torch models never leak in here, so collector processes stay light.
"""
