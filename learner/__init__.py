"""The learner, in rooms that follow the pipeline (each imports only rooms before it):

``nets`` (encoders, heads, the pair model) -> ``methods`` (one file per method, the losses,
the registry) -> ``data`` (pair sources, targets, augmentations, image input) ->
``evaluation`` (features, scores, references, shortcut, plots) -> ``training`` (the learner,
the loop, run state, logs, checkpoints, devices, curiosity) -> ``report`` (jobs, tables,
files). The console scripts stay at the door: ``train_app``, ``eval_app``, ``report_app``.
"""
