"""Checks deploy/aws-batch/ with the AWS SDK's own request validation, offline: each JSON file is
the input of one AWS Batch call (RegisterJobDefinition, SubmitJob) and must pass botocore's
parameter validation for it (unknown keys, types, required members, enums); then the job
definition is registered on the moto server at --endpoint (moto runs submitted jobs through
Docker, so nothing is submitted there). Prints one line per file; exits 1 on any failure."""
import argparse
import json
import pathlib
import sys

import boto3
from botocore.validate import ParamValidator

CALLS = {
    "job-definition.json": "RegisterJobDefinition",
    "submit-plan.json": "SubmitJob",
    "submit-workers.json": "SubmitJob",
    "submit-finalize.json": "SubmitJob",
}

parser = argparse.ArgumentParser()
parser.add_argument("folder")
parser.add_argument("--endpoint", required=True)
args = parser.parse_args()
folder = pathlib.Path(args.folder)

client = boto3.client(
    "batch",
    region_name="us-east-1",
    endpoint_url=args.endpoint,
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
model = client.meta.service_model
failed = 0
for name, operation in CALLS.items():
    params = json.loads((folder / name).read_text())
    report = ParamValidator().validate(params, model.operation_model(operation).input_shape)
    if report.has_errors():
        print(f"FAIL {name} ({operation}): {report.generate_report()}")
        failed += 1
    else:
        print(f"ok   {name} ({operation})")

definition = json.loads((folder / "job-definition.json").read_text())
registered = client.register_job_definition(**definition)
described = client.describe_job_definitions(jobDefinitionName=definition["jobDefinitionName"])
found = [d for d in described["jobDefinitions"] if d["revision"] == registered["revision"]]
if not found or found[0]["containerProperties"]["command"] != definition["containerProperties"]["command"]:
    print(f"FAIL moto: the registered definition does not read back: {described}")
    failed += 1
else:
    print(f"ok   registered {registered['jobDefinitionArn']} on moto")
sys.exit(1 if failed else 0)
