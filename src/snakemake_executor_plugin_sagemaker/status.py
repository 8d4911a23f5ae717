"""Status of many Processing jobs in few API calls.

``DescribeProcessingJob`` takes one job per call; ``ListProcessingJobs`` returns up to 100 jobs per
call, filtered by name and status. A poll lists the run's ``InProgress`` jobs (every job name starts
with the run's prefix), so N running jobs cost ceil(N / 100) calls. A job missing from that list has
finished, is stopping, or is too new to be listed yet; only those are described, one call each,
which gives the final status with SageMaker's failure reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

ACTIVE = ("InProgress", "Stopping")


class ProcessingJobStatus:
    """Polls the jobs of one run. ``rate_limiter``: an async context manager entered per API call."""

    def __init__(self, client, name_prefix: str, rate_limiter=None,
                 warn: Callable[[str], None] = lambda message: None):
        self.client, self.name_prefix, self.warn = client, name_prefix, warn
        self.rate_limiter = rate_limiter if rate_limiter is not None else contextlib.nullcontext()

    async def _call(self, method, **kwargs) -> dict:
        if hasattr(self.rate_limiter, "__aenter__"):
            async with self.rate_limiter:
                return method(**kwargs)
        return method(**kwargs)

    async def in_progress(self) -> set[str]:
        """Names of this run's jobs that SageMaker lists as InProgress."""
        names, token = set(), None
        while True:
            kwargs = {"NameContains": self.name_prefix, "StatusEquals": "InProgress", "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = await self._call(self.client.list_processing_jobs, **kwargs)
            names.update(s["ProcessingJobName"] for s in page.get("ProcessingJobSummaries", []))
            token = page.get("NextToken")
            if not token:
                return names

    async def poll(self, names: Iterable[str]) -> dict[str, dict | None]:
        """For each job: ``None`` while it is active, else its final ``DescribeProcessingJob`` response.

        Raises what the listing raises; a job whose description fails counts as active (asked again
        at the next poll).
        """
        running = await self.in_progress()
        result: dict[str, dict | None] = {}
        for name in names:
            if name in running:
                result[name] = None
                continue
            try:
                desc = await self._call(self.client.describe_processing_job, ProcessingJobName=name)
            except Exception as e:  # throttled or a network hiccup: the next poll asks again
                self.warn(f"describing {name} failed ({e}); asking again at the next status check")
                result[name] = None
                continue
            result[name] = None if desc["ProcessingJobStatus"] in ACTIVE else desc
        return result
