"""The fork server the queue's consumer processes start from (``QUEUE_CONSUMER=process``).

Forking the web server's process is unsafe (it runs threads), and a fresh interpreter
took 7-10 s to import the backend before its consumer took a job, time the first import
after a start waited. multiprocessing's fork server is a process of one thread: started
with the backend imported, it forks consumers that need no imports of their own. This
module imports nothing of the backend, so ``hyper-ls serve`` starts the fork server before
it loads the app and the two imports run side by side.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver

START_METHOD = "forkserver"
CONSUMER_MODULE = "hyper_ls_backend.server.model"
"""What a consumer process runs (``consume``): imported in the fork server ahead."""


def start_fork_server() -> None:
    """Start the fork server now, importing the consumer's module in it meanwhile."""
    multiprocessing.get_context(START_METHOD).set_forkserver_preload([CONSUMER_MODULE])
    forkserver.ensure_running()
