"""pytest collection settings for the test folder."""

# `--doctest-modules` imports every module it collects. The Horovod worker
# is a script that `horovodrun` runs (it imports Horovod and trains at
# import): never import it as a test module.
collect_ignore = ["horovod_worker.py"]
