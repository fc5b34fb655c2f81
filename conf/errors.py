"""The one kind of failure the console scripts print as one line and exit 2 for.

`UserError` is a failure the user caused or can repair (a mistyped value, a dataset made
with other settings, a corrupt shard, a run folder another run holds, a batch that cannot
fit in memory): its message names what is wrong and what to do, and ``conf.app`` prints it
as ``<script>: error: <message>`` with exit code 2, removing the run folder when the run
wrote nothing into it (``HYDRA_FULL_ERROR=1`` shows the traceback instead). Any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can cause or repair: one line naming it, exit code 2."""
