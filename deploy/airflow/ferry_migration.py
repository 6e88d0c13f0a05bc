"""Ferry: migrate a DynamoDB export with Airflow 3.

    plan (plan + submit, one command) -> worker x N (mapped, in parallel) -> finalize (--wait)

Trigger it with the run's parameters (the run id is fixed, so a retried task works on the same run):

    airflow dags trigger ferry_migration -c '{"run_id": "app-2026-11",
        "export": "s3://my-exports/app/AWSDynamoDB/01700000000000-0a1b2c3d/", "workers": 8}'

Where the tasks run is chosen when the DAG file is parsed, by FERRY_AIRFLOW_EXECUTION:

- ``kubernetes`` (default): each task is a KubernetesPodOperator running Ferry's image
  (deploy/Dockerfile) in the namespace that deploy/k8s sets up: the ``ferry`` ServiceAccount (IRSA
  role), the ``ferry-config`` ConfigMap (ferry.toml), ``ferry-run`` (queue-url) and the
  ``ferry-target`` Secret (url, and ca.pem: the database's certificate authority, mounted at
  /etc/ferry-tls for ferry.toml's ``sslmode = "verify-full"``). Needs
  apache-airflow-providers-cncf-kubernetes.
- ``local``: each task runs the binaries on the Airflow worker itself (``FERRY_BIN_DIR``, default
  /usr/local/bin; configuration from the ``config`` param's file and the FERRY_* environment): a VM with the
  LocalExecutor, and the variant Ferry's test runs for real against PostgreSQL and an S3/SQS
  endpoint.
- AWS Batch: replace ``ferry_task`` with the Amazon provider's ``BatchOperator`` on
  deploy/aws-batch/job-definition.json (``container_overrides={"command": [...]}`` with the same
  arguments, ``array_properties={"size": N}`` for the workers), or let Batch chain the jobs itself
  (deploy/aws-batch/submit.sh) and trigger that.

Exit codes: 0 done; 2 cannot start (bad arguments, config or target): the task fails at once,
without retries (local variant; a pod's exit code reaches Airflow only as a failure, so the
kubernetes variant retries it like any failure); anything else (1: a shard failed for a reason
outside its data; a crash) is retried, and the retried worker resumes from the ledger's checkpoints.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

EXECUTION = os.environ.get("FERRY_AIRFLOW_EXECUTION", "kubernetes")
# Seconds between tries of a failed task (the test shortens it).
RETRY_DELAY = timedelta(seconds=int(os.environ.get("FERRY_AIRFLOW_RETRY_DELAY_SECS", "60")))
CONFIG = "{{ params.config }}"

PLAN = ["plan", "--export", "{{ params.export }}", "--run-id", "{{ params.run_id }}", "--submit",
        "--config", CONFIG]
WORKER = ["--workers", "{{ params.shards_per_worker }}", "--config", CONFIG]
FINALIZE = ["finalize", "--wait", "--interval", "5", "--run-id", "{{ params.run_id }}",
            "--config", CONFIG]
# FERRY_FAILPOINTS for each worker's first try only: a drill that proves a failed worker is retried
# and its shards resumed (e.g. "after_commit=exit@1": die right after the first commit, as a crashed
# pod would). Empty in production.
DRILL = "{{ params.drill_failpoints if ti.try_number == 1 else '' }}"


def run_local(binary: str, args: list[str], extra_env: dict[str, str] | None = None) -> str:
    """Runs a Ferry binary on this machine; maps its exit code to Airflow's retry decision."""
    path = os.path.join(os.environ.get("FERRY_BIN_DIR", "/usr/local/bin"), binary)
    env = {**os.environ, **{k: v for k, v in (extra_env or {}).items() if v}}
    # stdout is the command's answer (plan prints the run id); its log lines go to stderr.
    proc = subprocess.run([path, *args], env=env, stdout=subprocess.PIPE, text=True, check=False)
    print(proc.stdout)
    if proc.returncode == 0:
        return proc.stdout
    if proc.returncode == 2:
        raise AirflowFailException(f"{binary} cannot start (exit 2): not retried")
    raise AirflowException(f"{binary} exited with {proc.returncode}: retrying")


def kubernetes_task(task_id: str, binary: str, args: list[str], **kwargs):
    """A KubernetesPodOperator running ``binary`` with ``args`` in Ferry's image."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    env = [
        k8s.V1EnvVar(name="FERRY_QUEUE__URL", value_from=k8s.V1EnvVarSource(
            config_map_key_ref=k8s.V1ConfigMapKeySelector(name="ferry-run", key="queue-url"))),
        k8s.V1EnvVar(name="FERRY_TARGET__URL", value_from=k8s.V1EnvVarSource(
            secret_key_ref=k8s.V1SecretKeySelector(name="ferry-target", key="url"))),
    ]
    return KubernetesPodOperator.partial(
        task_id=task_id,
        namespace="{{ params.namespace }}",
        image="{{ params.image }}",
        cmds=[f"/usr/local/bin/{binary}"],
        arguments=[*args, "--log-format", "json"],
        env_vars=env,
        service_account_name="ferry",
        volumes=[
            k8s.V1Volume(name="config", config_map=k8s.V1ConfigMapVolumeSource(name="ferry-config")),
            # The database's certificate authority (target.sslrootcert in ferry.toml).
            k8s.V1Volume(name="target-ca", secret=k8s.V1SecretVolumeSource(
                secret_name="ferry-target", items=[k8s.V1KeyToPath(key="ca.pem", path="ca.pem")])),
            k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
        ],
        volume_mounts=[
            k8s.V1VolumeMount(name="config", mount_path="/etc/ferry", read_only=True),
            k8s.V1VolumeMount(name="target-ca", mount_path="/etc/ferry-tls", read_only=True),
            k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ],
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=65532),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False, read_only_root_filesystem=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"])),
        # Longer than the slowest chunk commit: a stopped worker finishes or rolls back its chunk.
        termination_grace_period=120,
        on_finish_action="delete_succeeded_pod",
        get_logs=True,
        **kwargs,
    )


@dag(
    dag_id="ferry_migration",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["ferry"],
    params={
        "run_id": Param(type="string", minLength=1, description="The run (fixed across retries)."),
        "export": Param(type="string", minLength=1, description="s3://bucket/prefix/AWSDynamoDB/<id>/"),
        "workers": Param(3, type="integer", minimum=1, description="Worker tasks loading at once."),
        "shards_per_worker": Param(2, type="integer", minimum=1),
        "config": Param("/etc/ferry/ferry.toml", type="string"),
        "image": Param("ferry:0.1.0", type="string"),
        "namespace": Param("ferry", type="string"),
        "drill_failpoints": Param("", type="string",
                                  description="FERRY_FAILPOINTS for each worker's first try (a drill)."),
    },
)
def ferry_migration():
    @task
    def worker_indexes() -> list[int]:
        return list(range(int(get_current_context()["params"]["workers"])))

    if EXECUTION == "local":
        @task(retries=2, retry_delay=RETRY_DELAY)
        def plan(args: list[str]) -> str:
            return run_local("ferry-coordinator", args).strip().splitlines()[-1]

        @task(retries=3, retry_delay=RETRY_DELAY)
        def worker(index: int, args: list[str], drill: str) -> int:
            print(f"worker {index}")
            run_local("ferry-worker", args, {"FERRY_FAILPOINTS": drill})
            return index

        @task(retries=1, retry_delay=RETRY_DELAY)
        def finalize(args: list[str], workers_done: list[int]) -> str:
            return run_local("ferry-coordinator", args)

        planned = plan(PLAN)
        indexes = worker_indexes()
        planned >> indexes
        done = worker.partial(args=WORKER, drill=DRILL).expand(index=indexes)
        finalize(FINALIZE, done)
    elif EXECUTION == "kubernetes":
        plan = kubernetes_task("plan", "ferry-coordinator", PLAN, retries=2,
                               retry_delay=RETRY_DELAY).expand(labels=[{"app.kubernetes.io/component": "plan"}])

        @task
        def worker_labels(indexes: list[int]) -> list[dict[str, str]]:
            return [{"app.kubernetes.io/component": "worker", "ferry/worker": str(i)} for i in indexes]

        workers = kubernetes_task("worker", "ferry-worker", WORKER, retries=3,
                                  retry_delay=RETRY_DELAY).expand(labels=worker_labels(worker_indexes()))
        final = kubernetes_task("finalize", "ferry-coordinator", FINALIZE, retries=1,
                                retry_delay=RETRY_DELAY).expand(labels=[{"app.kubernetes.io/component": "finalize"}])
        plan >> workers >> final
    else:
        raise ValueError(f"FERRY_AIRFLOW_EXECUTION={EXECUTION!r}: expected kubernetes or local")


ferry_migration()
