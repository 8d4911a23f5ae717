"""A local emulator of the AWS Batch and SageMaker Processing job APIs that actually runs the jobs.

moto's Batch and SageMaker mocks run nothing (jobs complete at once), so executor tests could not
tell a working job from a broken one. This server speaks the wire protocols botocore uses (Batch:
REST-JSON under ``/v1/…``; SageMaker: JSON 1.1 with ``X-Amz-Target``) on 127.0.0.1, validates every
request against botocore's service model as AWS does (lengths, counts, enums, patterns), runs each
submitted container command in a subprocess (:mod:`.runner`) and reports its real state: running,
succeeded or failed with a reason, timed out, terminated/stopped. Boto3 reaches it through
``AWS_ENDPOINT_URL_BATCH`` / ``AWS_ENDPOINT_URL_SAGEMAKER``.

What it models, and what it does not: one container per job (no array, multi-node or multi-instance
jobs), no queues or capacity (a job starts as soon as it is submitted), GPUs as a count
(``TESSERA_GPU_COUNT`` in the container), CloudWatch as one log file per job under ``root/logs``.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import botocore.session

from aws_emulator.runner import ContainerRun, Image, container_env
from aws_emulator.validate import validate

ACCOUNT = "123456789012"
#: GPUs of the SageMaker instance types the tests use (others: none).
INSTANCE_GPUS = {"ml.g4dn.xlarge": 1, "ml.g5.xlarge": 1, "ml.g5.2xlarge": 1, "ml.g5.12xlarge": 4, "ml.g6.xlarge": 1}


class ApiError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass
class Request:
    service: str
    operation: str
    params: dict
    body: str


@dataclass
class BatchJob:
    job_id: str
    name: str
    queue: str
    definition: dict
    created: float
    status: str = "SUBMITTED"
    status_reason: str | None = None
    started: float | None = None
    stopped: float | None = None
    exit_code: int | None = None
    terminate_reason: str | None = None
    run: ContainerRun | None = None


@dataclass
class ProcessingJob:
    name: str
    arn: str
    request: dict
    created: float
    status: str = "InProgress"
    failure_reason: str | None = None
    started: float | None = None
    ended: float | None = None
    modified: float = field(default_factory=time.time)
    run: ContainerRun | None = None


def _role_credentials() -> dict[str, str]:
    return {"AccessKeyId": "ASIA" + secrets.token_hex(8).upper(), "SecretAccessKey": secrets.token_urlsafe(30),
            "Token": "role-session-" + secrets.token_urlsafe(48)}


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N → 128 + N, as Docker reports


class AwsJobEmulator:
    """Batch and SageMaker Processing on 127.0.0.1. ``images`` maps image URIs to local environments;
    ``roles`` are the IAM role ARNs that exist (each gets its own temporary credentials)."""

    def __init__(self, root: Path, images: dict[str, Image], roles: list[str], job_queues: list[str],
                 region: str = "eu-west-2"):
        self.root, self.images, self.region = Path(root), images, region
        self.role_credentials = {arn: _role_credentials() for arn in roles}
        self.job_queues = set(job_queues)
        self.requests: list[Request] = []
        self.credential_fetches: Counter[str] = Counter()  # role ARN → fetches by its jobs
        self.batch_definitions: dict[str, dict] = {}  # ARN → definition
        self.batch_jobs: dict[str, BatchJob] = {}
        self.processing_jobs: dict[str, ProcessingJob] = {}
        self._tokens: dict[str, str] = {}  # credential URI token → role ARN
        self._lock = threading.RLock()
        session = botocore.session.get_session()
        self.models = {"batch": session.get_service_model("batch"), "sagemaker": session.get_service_model("sagemaker")}
        self._batch_routes = {
            (op.http["method"], op.http["requestUri"]): op.name
            for op in map(self.models["batch"].operation_model, self.models["batch"].operation_names)
        }
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "AwsJobEmulator":
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                emulator._handle_credentials(self)

            def do_POST(self):
                emulator._handle_api(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        with self._lock:
            runs = [j.run for j in self.batch_jobs.values()] + [j.run for j in self.processing_jobs.values()]
        for run in runs:
            if run is not None:
                run.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- what tests look at ----------------------------------------------------------------------
    def calls(self, operation: str) -> int:
        with self._lock:
            return sum(r.operation == operation for r in self.requests)

    def log_texts(self) -> dict[str, str]:
        """Every job's log (the emulated CloudWatch), by log file name."""
        return {p.name: p.read_text(errors="replace") for p in sorted((self.root / "logs").rglob("*.log"))}

    def wait_for(self, predicate, timeout_s: float = 120, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"emulator: timed out waiting for {what}")
            time.sleep(0.1)

    # --- HTTP plumbing ---------------------------------------------------------------------------
    def _reply(self, handler, status: int, payload: dict, content_type: str, error_code: str | None = None):
        body = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        if error_code:
            handler.send_header("x-amzn-ErrorType", error_code)
        handler.end_headers()
        handler.wfile.write(body)

    def _handle_api(self, handler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)).decode()
        target = handler.headers.get("X-Amz-Target")
        if target:
            service, content_type = "sagemaker", "application/x-amz-json-1.1"
            operation = target.split(".", 1)[1]
        else:
            service, content_type = "batch", "application/json"
            operation = self._batch_routes.get(("POST", handler.path.split("?")[0]), "")
        try:
            params = json.loads(raw or "{}")
            model = self.models[service]
            if operation not in model.operation_names:
                raise ApiError("UnknownOperationException", f"{service} has no operation {operation!r}", 404)
            with self._lock:
                self.requests.append(Request(service, operation, params, raw))
            problems = validate(model.operation_model(operation).input_shape, params, operation)
            if problems:
                code = "ClientException" if service == "batch" else "ValidationException"
                raise ApiError(code, f"{len(problems)} validation error(s): " + "; ".join(problems))
            method = getattr(self, f"_{service}_{_snake(operation)}", None)
            if method is None:
                raise ApiError("UnknownOperationException", f"the emulator does not implement {operation}", 501)
            with self._lock:
                result = method(params)
            self._reply(handler, 200, result, content_type)
        except ApiError as e:
            self._reply(handler, e.status, {"__type": e.code, "message": e.message}, content_type, e.code)

    def _handle_credentials(self, handler) -> None:
        token = handler.path.rsplit("/", 1)[-1]
        with self._lock:
            role = self._tokens.get(token)
            if role is not None:
                self.credential_fetches[role] += 1
        if role is None:
            return self._reply(handler, 404, {"message": "no such credentials"}, "application/json")
        expiry = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._reply(handler, 200, dict(self.role_credentials[role], Expiration=expiry, RoleArn=role), "application/json")

    def _platform_env(self, role: str | None, gpus: int, extra: dict[str, str]) -> dict[str, str]:
        env = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region, "TESSERA_GPU_COUNT": str(gpus), **extra}
        if role in self.role_credentials:
            token = secrets.token_hex(16)
            self._tokens[token] = role
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = f"{self.endpoint}/credentials/{token}"
        return env

    # --- AWS Batch -------------------------------------------------------------------------------
    def _batch_register_job_definition(self, p: dict) -> dict:
        if p["type"] != "container" or "containerProperties" not in p:
            raise ApiError("ClientException", "the emulator supports container job definitions only")
        reqs = {r["type"]: r["value"] for r in p["containerProperties"].get("resourceRequirements", [])}
        if "VCPU" not in reqs or "MEMORY" not in reqs:
            raise ApiError("ClientException", "Error executing request, Exception : resourceRequirements must "
                                              "specify VCPU and MEMORY")
        timeout = p.get("timeout", {}).get("attemptDurationSeconds")
        if timeout is not None and timeout < 60:
            raise ApiError("ClientException", "Error executing request, Exception : attemptDurationSeconds must "
                                              "be at least 60 seconds")
        name = p["jobDefinitionName"]
        revision = 1 + sum(d["jobDefinitionName"] == name for d in self.batch_definitions.values())
        arn = f"arn:aws:batch:{self.region}:{ACCOUNT}:job-definition/{name}:{revision}"
        self.batch_definitions[arn] = dict(p, revision=revision, jobDefinitionArn=arn, status="ACTIVE")
        return {"jobDefinitionName": name, "jobDefinitionArn": arn, "revision": revision}

    def _batch_definition(self, ref: str) -> dict:
        if ref in self.batch_definitions:
            return self.batch_definitions[ref]
        name, _, rev = ref.partition(":")
        matches = [d for d in self.batch_definitions.values() if d["jobDefinitionName"] == name
                   and d["status"] == "ACTIVE" and (not rev or str(d["revision"]) == rev)]
        if not matches:
            raise ApiError("ClientException", f"Job definition {ref} does not exist")
        return max(matches, key=lambda d: d["revision"])

    def _batch_submit_job(self, p: dict) -> dict:
        if p["jobQueue"] not in self.job_queues:
            raise ApiError("ClientException", f"Job queue {p['jobQueue']} does not exist")
        definition = self._batch_definition(p["jobDefinition"])
        job = BatchJob(str(uuid.uuid4()), p["jobName"], p["jobQueue"], definition, time.time())
        timeout = (p.get("timeout") or definition.get("timeout") or {}).get("attemptDurationSeconds")
        self.batch_jobs[job.job_id] = job
        props = definition["containerProperties"]
        image = self.images.get(props["image"])
        if image is None:
            self._batch_finish(job, "FAILED", f"CannotPullContainerError: pull image manifest has been retried "
                                              f"7 time(s): {props['image']}: not found", None)
        else:
            reqs = {r["type"]: r["value"] for r in props.get("resourceRequirements", [])}
            root = self.root / "batch" / job.job_id
            env = container_env(image, root, {e["name"]: e["value"] for e in props.get("environment", [])},
                                self._platform_env(props.get("jobRoleArn"), int(reqs.get("GPU", 0)),
                                                   {"AWS_BATCH_JOB_ID": job.job_id, "AWS_BATCH_JQ_NAME": job.queue}))
            job.run = ContainerRun(list(props["command"]), env, root, self.root / "logs" / "batch" / f"{job.job_id}.log",
                                   timeout, lambda code, timed_out, stopped, job=job: self._batch_exit(job, code, timed_out))
            job.status, job.started = "RUNNING", time.time()
            job.run.start()
        return {"jobArn": f"arn:aws:batch:{self.region}:{ACCOUNT}:job/{job.job_id}", "jobName": job.name,
                "jobId": job.job_id}

    def _batch_exit(self, job: BatchJob, returncode: int, timed_out: bool) -> None:
        with self._lock:
            code = _exit_code(returncode)
            if job.terminate_reason is not None:
                self._batch_finish(job, "FAILED", job.terminate_reason, code)
            elif timed_out:
                self._batch_finish(job, "FAILED", "Job attempt duration exceeded timeout", code)
            elif code == 0:
                self._batch_finish(job, "SUCCEEDED", "Essential container in task exited", 0)
            else:
                self._batch_finish(job, "FAILED", "Essential container in task exited", code)

    def _batch_finish(self, job: BatchJob, status: str, reason: str, exit_code: int | None) -> None:
        job.status, job.status_reason, job.exit_code, job.stopped = status, reason, exit_code, time.time()

    def _batch_describe_jobs(self, p: dict) -> dict:
        if len(p["jobs"]) > 100:
            raise ApiError("ClientException", "at most 100 job IDs per DescribeJobs call")
        out = []
        for job_id in p["jobs"]:
            job = self.batch_jobs.get(job_id)
            if job is None:
                continue
            props = job.definition["containerProperties"]
            detail = {
                "jobArn": f"arn:aws:batch:{self.region}:{ACCOUNT}:job/{job.job_id}", "jobName": job.name,
                "jobId": job.job_id, "jobQueue": job.queue, "status": job.status,
                "createdAt": int(job.created * 1000), "jobDefinition": job.definition["jobDefinitionArn"],
                "container": {"image": props["image"], "command": props["command"],
                              "resourceRequirements": props.get("resourceRequirements", []),
                              "logStreamName": f"{job.definition['jobDefinitionName']}/default/{job.job_id}"},
            }
            if job.definition.get("timeout"):
                detail["timeout"] = job.definition["timeout"]
            if job.status_reason:
                detail["statusReason"] = job.status_reason
            if job.started:
                detail["startedAt"] = int(job.started * 1000)
            if job.stopped:
                detail["stoppedAt"] = int(job.stopped * 1000)
            if job.exit_code is not None:
                detail["container"]["exitCode"] = job.exit_code
            out.append(detail)
        return {"jobs": out}

    def _batch_terminate_job(self, p: dict) -> dict:
        job = self.batch_jobs.get(p["jobId"])
        if job is None:
            raise ApiError("ClientException", f"Job {p['jobId']} does not exist")
        if job.status not in ("SUCCEEDED", "FAILED"):
            job.terminate_reason = p["reason"]
            if job.run is not None:
                threading.Thread(target=job.run.stop, daemon=True).start()
            else:
                self._batch_finish(job, "FAILED", p["reason"], None)
        return {}

    def _batch_deregister_job_definition(self, p: dict) -> dict:
        self._batch_definition(p["jobDefinition"])["status"] = "INACTIVE"
        return {}

    # --- SageMaker Processing --------------------------------------------------------------------
    def _sagemaker_create_processing_job(self, p: dict) -> dict:
        name = p["ProcessingJobName"]
        if name in self.processing_jobs:
            raise ApiError("ResourceInUse", f"Job name must be unique within an AWS account and region, and a job "
                                            f"with this name already exists ({name})")
        if p["RoleArn"] not in self.role_credentials:
            raise ApiError("ValidationException", f"Could not assume role {p['RoleArn']}. Please ensure that the "
                                                  "role exists and allows principal 'sagemaker.amazonaws.com' to "
                                                  "assume the role.")
        arn = f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:processing-job/{name.lower()}"
        job = ProcessingJob(name, arn, p, time.time())
        self.processing_jobs[name] = job
        app = p["AppSpecification"]
        image = self.images.get(app["ImageUri"])
        argv = app.get("ContainerEntrypoint", []) + app.get("ContainerArguments", [])
        if image is None:
            self._processing_finish(job, "Failed", f"ClientError: Failed to invoke sagemaker:CreateProcessingJob. "
                                                   f"Error Details: Image {app['ImageUri']} does not exist")
        elif not argv:
            self._processing_finish(job, "Failed", "ClientError: the image has no entrypoint and none was given")
        else:
            cluster = p["ProcessingResources"]["ClusterConfig"]
            root = self.root / "sagemaker" / name
            env = container_env(image, root, p.get("Environment", {}),
                                self._platform_env(p["RoleArn"], INSTANCE_GPUS.get(cluster["InstanceType"], 0), {}))
            job.run = ContainerRun(argv, env, root, self.root / "logs" / "sagemaker" / f"{name}.log",
                                   p["StoppingCondition"]["MaxRuntimeInSeconds"],
                                   lambda code, timed_out, stopped, job=job: self._processing_exit(job, code,
                                                                                                   timed_out))
            job.started = time.time()
            job.run.start()
        return {"ProcessingJobArn": arn}

    def _processing_exit(self, job: ProcessingJob, returncode: int, timed_out: bool) -> None:
        with self._lock:
            if job.status == "Stopping":
                self._processing_finish(job, "Stopped", None)
            elif timed_out:
                limit = job.request["StoppingCondition"]["MaxRuntimeInSeconds"]
                self._processing_finish(job, "Stopped", f"MaxRuntimeExceeded: the job ran longer than its "
                                                        f"MaxRuntimeInSeconds ({limit} s)")
            elif returncode == 0:
                self._processing_finish(job, "Completed", None)
            else:
                self._processing_finish(job, "Failed", "AlgorithmError: See job logs for more information")

    def _processing_finish(self, job: ProcessingJob, status: str, reason: str | None) -> None:
        job.status, job.failure_reason, job.ended = status, reason, time.time()
        job.modified = job.ended

    def _processing_job(self, name: str) -> ProcessingJob:
        job = self.processing_jobs.get(name)
        if job is None:
            raise ApiError("ResourceNotFound", f"Processing Job {name} does not exist")
        return job

    def _sagemaker_describe_processing_job(self, p: dict) -> dict:
        job = self._processing_job(p["ProcessingJobName"])
        keys = ("ProcessingResources", "StoppingCondition", "AppSpecification", "Environment", "NetworkConfig",
                "RoleArn")
        out = {k: job.request[k] for k in keys if k in job.request}
        out.update(ProcessingJobName=job.name, ProcessingJobArn=job.arn, ProcessingJobStatus=job.status,
                   CreationTime=job.created, LastModifiedTime=job.modified)
        if job.started:
            out["ProcessingStartTime"] = job.started
        if job.ended:
            out["ProcessingEndTime"] = job.ended
        if job.failure_reason:
            out["FailureReason"] = job.failure_reason
        return out

    def _sagemaker_list_processing_jobs(self, p: dict) -> dict:
        jobs = list(self.processing_jobs.values())
        if "NameContains" in p:
            jobs = [j for j in jobs if p["NameContains"].lower() in j.name.lower()]
        if "StatusEquals" in p:
            jobs = [j for j in jobs if j.status == p["StatusEquals"]]
        if "CreationTimeAfter" in p:
            jobs = [j for j in jobs if j.created > float(p["CreationTimeAfter"])]
        if "CreationTimeBefore" in p:
            jobs = [j for j in jobs if j.created < float(p["CreationTimeBefore"])]
        key = {"Name": lambda j: j.name, "Status": lambda j: j.status}.get(p.get("SortBy"), lambda j: j.created)
        jobs.sort(key=key, reverse=p.get("SortOrder", "Descending") == "Descending")
        start = int(p.get("NextToken") or 0)
        size = p.get("MaxResults", 10)
        page = jobs[start:start + size]
        out: dict[str, Any] = {"ProcessingJobSummaries": [
            {"ProcessingJobName": j.name, "ProcessingJobArn": j.arn, "CreationTime": j.created,
             "LastModifiedTime": j.modified, "ProcessingJobStatus": j.status,
             **({"ProcessingEndTime": j.ended} if j.ended else {}),
             **({"FailureReason": j.failure_reason} if j.failure_reason else {})}
            for j in page]}
        if start + size < len(jobs):
            out["NextToken"] = str(start + size)
        return out

    def _sagemaker_stop_processing_job(self, p: dict) -> dict:
        job = self._processing_job(p["ProcessingJobName"])
        if job.status != "InProgress":
            raise ApiError("ValidationException", f"The request was rejected because the processing job is in "
                                                  f"status {job.status}.")
        job.status, job.modified = "Stopping", time.time()
        if job.run is not None:
            threading.Thread(target=job.run.stop, daemon=True).start()
        return {}


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
