"""The training configs of ``train.py`` (``--config configs/<name>.py``); shared parts in
:mod:`configs.common`."""
