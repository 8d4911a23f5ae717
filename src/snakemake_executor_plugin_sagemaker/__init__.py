"""Snakemake executor that runs each job as an Amazon SageMaker Processing job.

``snakemake --executor sagemaker --default-storage-provider s3 --default-storage-prefix s3://… \\
--container-image ACCOUNT.dkr.ecr.REGION.amazonaws.com/IMAGE:TAG --sagemaker-role arn:aws:iam::…:role/…``

Each job becomes one single-instance Processing job in the workflow's image: the instance type comes
from the job's resources (:mod:`.instances`), the ML storage volume from ``disk_mb``, the maximum
runtime from ``runtime``; role, subnets, security groups, KMS key and tags are settings. The job reads
its inputs from and writes its outputs to the default storage (S3) itself, with the job role's
credentials: no credential is ever put into a job (names that look like credentials are dropped from
its environment, and a request that would contain the submitting process's own AWS keys or a storage
credential is refused before it is sent: :mod:`tessera.credentials`).

Status: one ``ListProcessingJobs`` call per 100 running jobs, one ``DescribeProcessingJob`` per job
when it finishes (:mod:`.status`), which gives SageMaker's failure reason. Cancelling stops every
active job.
"""


import re
import shlex
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncGenerator, List, Optional

import boto3
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

from snakemake_executor_plugin_sagemaker.instances import InstanceChoiceError, choose_instance
from snakemake_executor_plugin_sagemaker.jobspec import (
    JobSpecError,
    job_name,
    max_runtime_s,
    parse_tags,
    processing_job_request,
    split_environment,
    volume_size_gb,
)
from snakemake_executor_plugin_sagemaker.status import ProcessingJobStatus
from tessera.credentials import guard_requests, identity_secrets, storage_setting_secrets

ECR_IMAGE = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^\s]+$")
LOG_GROUP = "/aws/sagemaker/ProcessingJobs"


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    role: Optional[str] = field(
        default=None,
        metadata={"help": "ARN of the IAM role the Processing jobs run as (its credentials are the jobs' only ones)",
                  "required": True},
    )
    region: Optional[str] = field(
        default=None, metadata={"help": "AWS region (default: the usual AWS configuration, e.g. AWS_REGION)"}
    )
    gpu_instance_type: str = field(
        default="ml.g5.xlarge", metadata={"help": "instance type for jobs whose resources ask for gpu >= 1"}
    )
    min_volume_gb: int = field(
        default=30, metadata={"help": "smallest ML storage volume in GiB (a job's disk_mb, rounded up, if larger)"}
    )
    default_max_runtime_s: int = field(
        default=86400,
        metadata={"help": "maximum runtime in seconds for jobs whose rule sets no runtime resource"},
    )
    subnets: List[str] = field(
        default_factory=list, metadata={"help": "VPC subnet IDs for the jobs (with --sagemaker-security-groups)", "nargs": "+"}
    )
    security_groups: List[str] = field(
        default_factory=list, metadata={"help": "VPC security group IDs for the jobs (with --sagemaker-subnets)", "nargs": "+"}
    )
    volume_kms_key: Optional[str] = field(
        default=None, metadata={"help": "KMS key ID or ARN that encrypts the jobs' storage volumes"}
    )
    tags: List[str] = field(
        default_factory=list, metadata={"help": "tags for every job, as KEY=VALUE", "nargs": "+"}
    )
    job_name_prefix: str = field(default="snakejob", metadata={"help": "start of every Processing job name"})
    workdir: str = field(
        default="/opt/ml/processing/snakemake",
        metadata={"help": "working directory inside the job, on the ML storage volume"},
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=True,
    job_deploy_sources=True,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    # Environment variables go into the job's Environment, not onto its command line.
    pass_envvar_declarations_to_cmd=False,
    # The image has the storage plugins installed; jobs must not need to reach a package index.
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)


class Executor(RemoteExecutor):
    def __post_init__(self):
        self.settings: ExecutorSettings = self.workflow.executor_settings
        self.image = self.workflow.remote_execution_settings.container_image
        if not ECR_IMAGE.match(self.image or ""):
            raise WorkflowError(
                f"SageMaker runs images from Amazon ECR only, not {self.image!r}: build and push the workflow's "
                "image (containers/README) and pass --container-image ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG"
            )
        try:
            self.tags = parse_tags(self.settings.tags)
        except JobSpecError as e:
            raise WorkflowError(str(e)) from e
        session = boto3.session.Session(region_name=self.settings.region)
        self.client = session.client("sagemaker")
        self.region = self.client.meta.region_name
        self.run_id = uuid.uuid4().hex[:8]
        self.name_prefix = job_name(self.settings.job_name_prefix, self.run_id, "", "") + "-"
        self.status = ProcessingJobStatus(self.client, self.name_prefix, self.status_rate_limiter,
                                          self.logger.warning)
        # This process's credentials and the parsed storage settings' never reach a job: every request
        # that would carry one is refused before it is sent (tessera.credentials, as for AWS Batch).
        storage = [s for tagged in self.workflow.storage_provider_settings.values() for s in tagged]
        guard_requests(self.client.meta.events, "sagemaker",
                       lambda: identity_secrets(session) + storage_setting_secrets(storage), what="SageMaker")

    def get_job_exec_prefix(self, job: JobExecutorInterface) -> str:
        workdir = shlex.quote(self.settings.workdir)
        return f"mkdir -p {workdir} && cd {workdir}"

    def job_request(self, job: JobExecutorInterface) -> dict:
        """The CreateProcessingJob request for ``job``; raises WorkflowError if it cannot be run."""
        res = job.resources
        gpus = int(res.get("gpu", 0) or 0)
        mem_mib = int(res.get("mem_mib", 0) or 0)
        disk_mib = int(res.get("disk_mib", 0) or 0)
        override = res.get("sagemaker_instance_type")
        envvars, dropped = split_environment(self.envvars())
        if dropped:
            self.logger.warning(
                f"not passing {', '.join(dropped)} to SageMaker jobs: jobs get credentials from their role only"
            )
        try:
            instance_type = choose_instance(job.threads, mem_mib, gpus, self.settings.gpu_instance_type,
                                            str(override) if override else None)
            request = processing_job_request(
                name=job_name(self.settings.job_name_prefix, self.run_id, job.jobid, job.name),
                image=self.image,
                role=self.settings.role,
                command=self.format_job_exec(job),
                environment=envvars,
                instance_type=instance_type,
                volume_gb=volume_size_gb(disk_mib, self.settings.min_volume_gb),
                max_runtime=max_runtime_s(res.get("runtime"), self.settings.default_max_runtime_s),
                subnets=self.settings.subnets or (),
                security_groups=self.settings.security_groups or (),
                volume_kms_key=self.settings.volume_kms_key,
                tags=self.tags + [{"Key": "snakemake:rule", "Value": job.name},
                                  {"Key": "snakemake:run", "Value": self.run_id}],
            )
        except (InstanceChoiceError, JobSpecError) as e:
            raise WorkflowError(f"cannot run job {job.jobid} (rule {job.name}) on SageMaker: {e}") from e
        return request

    def run_job(self, job: JobExecutorInterface):
        request = self.job_request(job)
        name = request["ProcessingJobName"]
        try:
            self.client.create_processing_job(**request)
        except Exception as e:
            raise WorkflowError(f"failed to create SageMaker processing job {name}: {e}") from e
        instance = request["ProcessingResources"]["ClusterConfig"]["InstanceType"]
        self.logger.info(f"job {job.jobid} ({job.name}) submitted as SageMaker processing job {name} on {instance}")
        self.report_job_submission(
            SubmittedJobInfo(job=job, external_jobid=name, aux={"submitted": time.time(), "instance": instance})
        )

    async def check_active_jobs(
        self, active_jobs: List[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:  # also: the status thread starts before __post_init__ has run
            return
        try:
            statuses = await self.status.poll(job.external_jobid for job in active_jobs)
        except Exception as e:
            self.logger.warning(f"listing SageMaker processing jobs failed ({e}); checking again later")
            for job in active_jobs:
                yield job
            return
        for job in active_jobs:
            desc = statuses[job.external_jobid]
            if desc is None:
                yield job
            elif desc["ProcessingJobStatus"] == "Completed":
                self.report_job_success(job)
            else:
                self.report_job_error(job, msg=self._failure_message(desc))

    def _failure_message(self, desc: dict) -> str:
        name = desc["ProcessingJobName"]
        parts = [f"SageMaker processing job {name} {desc['ProcessingJobStatus'].lower()}"]
        if desc.get("FailureReason"):
            parts.append(f"reason: {desc['FailureReason']}")
        if desc.get("ExitMessage"):
            parts.append(f"exit message: {desc['ExitMessage'].strip()}")
        parts.append(
            f"logs: CloudWatch log group {LOG_GROUP}, streams {name}/* "
            f"(aws logs tail {LOG_GROUP} --log-stream-name-prefix {name} --region {self.region})"
        )
        return "; ".join(parts) + ". "

    def cancel_jobs(self, active_jobs: List[SubmittedJobInfo]):
        for job in active_jobs:
            try:
                self.client.stop_processing_job(ProcessingJobName=job.external_jobid)
                self.logger.info(f"stopping SageMaker processing job {job.external_jobid}")
            except Exception as e:  # finished meanwhile, or already stopping
                self.logger.info(f"could not stop SageMaker processing job {job.external_jobid}: {e}")
