"""What jaxseg's programs (``train.py``, ``fit_surrogate.py``) share on the command line.

The ``--config`` flag (a config file with ``--config.<field>=<value>`` overrides, locked
against misspelt fields), flag parsing, and one ``ERROR: ...`` line with exit status 1, instead of
a traceback or absl's usage text, for a bad flag, a bad config field or an error the trainer
raises for a config or a workdir. Light on purpose (absl and ml_collections only): a program
defines its flags and reports their errors before it imports the trainer.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn, Sequence

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def _one_line(text) -> str:
  text = str(text)
  # A config file's own error comes with its traceback: keep that one as it is.
  return text if "Traceback (most recent call last)" in text else " ".join(text.split())


def _raised_by_ml_collections(e: BaseException) -> bool:
  tb = e.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and "ml_collections" in tb.tb_frame.f_code.co_filename


def exit_with_error(message, *, at_once: bool = False) -> NoReturn:
  """Prints ``ERROR: <message>`` (on one line) to stderr and exits with status 1.

  ``at_once``: ``os._exit`` after flushing, for an error the trainer raised once its files are
  closed: background threads of orbax or TensorBoard left at interpreter shutdown would print
  tracebacks after the one line.
  """
  print(f"ERROR: {_one_line(message)}", file=sys.stderr, flush=True)
  if at_once:
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access
  sys.exit(1)


def exit_config_error(e: BaseException) -> NoReturn:
  """One line for a bad ``--config`` or ``--config.<field>``; a bug inside a config file (a
  KeyError or AttributeError it raises itself) keeps its traceback."""
  if isinstance(e, (KeyError, AttributeError)):
    if not _raised_by_ml_collections(e):
      raise e
    # A --config.<field> override that names no field of the config (ml_collections wraps the
    # KeyError of the locked ConfigDict in an AttributeError).
    inner = e.args[0] if e.args else e
    text = inner.args[0] if isinstance(inner, KeyError) and inner.args else str(inner)
    exit_with_error(f"a --config override names a field the config does not have: {text}")
  exit_with_error(e)


def define_config_flag(default: str, help_string: str) -> None:
  """``--config`` (default: the config file ``default``), locked against new fields.

  Without ``--config`` on the command line ml_collections loads ``default`` and checks the
  ``--config.<field>`` overrides while the flag is defined; with ``--config <file>``, when the
  flags are parsed (:func:`parse_flags`). Both report a mistake in one line.
  """
  try:
    config_flags.DEFINE_config_file("config", default=default, help_string=help_string,
                                    lock_config=True)
  except (AttributeError, KeyError, flags.Error) as e:
    exit_config_error(e)


def parse_flags(argv: Sequence[str]) -> list[str]:
  """``FLAGS(argv)`` (absl's ``flags_parser``), with one line instead of a traceback on an error."""
  try:
    args = FLAGS(argv)
    FLAGS.config.get("seed")  # a --config file that could not be loaded raises OSError here
    return args
  except (AttributeError, KeyError, OSError, flags.Error) as e:
    exit_config_error(e)


def start(argv: Sequence[str]) -> None:
  """The start of a program's ``main``: no positional arguments, and absl logging at WARNING
  unless ``--verbosity`` is given (orbax logs every save and restore at INFO)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
