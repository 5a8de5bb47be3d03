"""``otpnn serve``: training jobs behind an HTTP JSON API, under one supervision tree.

- :mod:`store`: the state directory (its lock, job records, checkpoints, reports, weights);
- :mod:`records`: the job record, made and validated (a damaged one fails its job);
- :mod:`jobs`: the JobManager (queue, job states, the service's supervision tree, resume);
- :mod:`lifecycle`: one job's build, run and result, and how it ended;
- :mod:`schema`: the request models (also the OpenAPI document's job config);
- :mod:`app`: the FastAPI app factory; :mod:`auth`, :mod:`limits`, :mod:`metrics`: its pieces;
- :mod:`server`: uvicorn as the service runs it (a read deadline for requests).
"""

from otpnn.service.app import create_app
from otpnn.service.jobs import JobManager

__all__ = ["JobManager", "create_app"]
