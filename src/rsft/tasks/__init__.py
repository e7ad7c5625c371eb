"""Tasks: the problem being solved — what candidates mean, how to evaluate, what to plot.

One module per ``conf/task/`` option (``_target_: rsft.tasks.<module>.<Class>``), each owning its helpers;
nothing is imported here, so a run loads only its own task.
"""
