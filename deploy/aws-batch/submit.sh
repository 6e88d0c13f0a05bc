#!/usr/bin/env bash
# Runs a Ferry migration on AWS Batch: registers the job definition, then submits plan (+ submit),
# an array job of workers that starts once planning succeeded, and finalize once every worker
# ended. Edit the JSON files first (image, role, queue, secret, export, run id). The job definition
# checks the database's certificate (sslmode=verify-full) against /etc/ferry-tls/ca.pem on the
# instance (put it there in the compute environment's launch template), mounted read-only.
#   deploy/aws-batch/submit.sh [workers]
set -euo pipefail
cd "$(dirname "$0")"
workers="${1:-8}"
aws batch register-job-definition --cli-input-json file://job-definition.json >/dev/null
plan=$(aws batch submit-job --cli-input-json file://submit-plan.json --query jobId --output text)
array=$(sed "s/PLAN_JOB_ID/$plan/" submit-workers.json)
array=$(aws batch submit-job --cli-input-json "$array" --array-properties "size=$workers" --query jobId --output text)
final=$(sed "s/WORKERS_JOB_ID/$array/" submit-finalize.json)
final=$(aws batch submit-job --cli-input-json "$final" --query jobId --output text)
echo "plan $plan, workers $array (x$workers), finalize $final"
