"""The app's one error root: a caller catches :class:`OtpnnError`, or one of its two halves.

- :class:`UsageError`: what the caller asked for cannot be done as asked (a bad config value,
  fault spec, data file, checkpoint, report, run option, an unreachable cluster). The message
  names what is wrong and what was expected; nothing was started or written. The CLI prints it
  without a traceback and exits 2; the service answers 4xx and stays up.
- :class:`TrainingFailed`: a valid job ran and its supervision tree gave up. The message names
  the actor, the reasons and the last checkpoint. The CLI exits 1; the service marks the job
  failed.

:class:`JobStopped` is neither: the job's owner asked it to stop (a signal, a cancel) and it
did, at a step boundary. Errors of the actors themselves (an injected crash, a lost worker)
stay inside the tree, which is what supervision is for; they reach a caller only as
:class:`TrainingFailed`.
"""

from __future__ import annotations


class OtpnnError(Exception):
    """Root of every error the app raises on purpose."""


class UsageError(OtpnnError):
    """Bad input of any kind; the message says what is wrong and what was expected."""


class TrainingFailed(OtpnnError):
    """The tree gave up; the message names the actor, the reasons and the last checkpoint."""


class JobStopped(OtpnnError):
    """A job's wait ended because a stop was requested (a signal, a cancel)."""
