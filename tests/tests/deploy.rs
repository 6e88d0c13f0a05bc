//! deploy/, validated or run for real:
//! - Kubernetes: `kubectl kustomize` renders the example overlay (KEDA workers) and the plain
//!   indexed-Job variant offline; the core kinds pass `kubernetes-validate --strict`, the KEDA and
//!   Argo objects their published models (schema + TypeScript types, no unknown field); the
//!   rendered objects carry what the docs promise (exit-code policy, grace period, run id, IRSA);
//! - every flag the manifests, the DAG and the Batch files pass exists in the binaries' `--help`;
//! - AWS Batch: botocore's request validation and `RegisterJobDefinition` on moto;
//! - Airflow: `airflow dags test` runs the DAG's local variant against PostgreSQL and moto (plan,
//!   submit, three mapped workers, one of which fails its first try and is retried, finalize) to
//!   exact rows, and the kubernetes variant parses;
//! - the local stack script runs the cluster mode on this machine to exact rows;
//! - the Grafana dashboard queries only metrics the binaries expose, in valid PromQL.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_tests::deploy::{airflow, promtool, repo_root, run_ok, validators_dir, Stack};
use ferry_tests::gen::GenOptions;
use ferry_tests::harness::{assert_table_matches, binary, stderr_of};
use ferry_tests::moto::shared_moto;

/// `kubectl kustomize` of `dir` (offline).
fn kustomize(dir: &Path) -> anyhow::Result<String> {
    run_ok(
        Command::new("kubectl")
            .args(["kustomize", "--load-restrictor", "LoadRestrictionsNone"])
            .arg(dir),
    )
}

/// YAML documents → JSON values, with the validators' PyYAML.
fn yaml_to_json(yaml: &str, work: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let file = work.join("to-json.yaml");
    std::fs::write(&file, yaml)?;
    let python = validators_dir()?.join("venv/bin/python");
    let json = run_ok(
        Command::new(python)
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
         print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            )
            .arg(&file),
    )?;
    Ok(serde_json::from_str(&json)?)
}

/// Writes `objects` of the core API groups to a file and runs `kubernetes-validate --strict`.
fn validate_core(objects: &[serde_json::Value], work: &Path, name: &str) -> anyhow::Result<usize> {
    let core: Vec<&serde_json::Value> = objects
        .iter()
        .filter(|o| {
            let api = o["apiVersion"].as_str().unwrap_or_default();
            !api.contains(".sh/") && !api.starts_with("argoproj.io/")
        })
        .collect();
    let file = work.join(format!("{name}-core.json"));
    // One JSON document per line is a YAML stream kubernetes-validate reads.
    let text: Vec<String> = core.iter().map(|o| format!("---\n{o}")).collect();
    std::fs::write(&file, text.join("\n"))?;
    let out = run_ok(
        Command::new(validators_dir()?.join("venv/bin/kubernetes-validate"))
            .args(["--strict"])
            .arg(&file),
    )?;
    assert_eq!(
        out.matches(" passed for resource ").count(),
        core.len(),
        "{out}"
    );
    Ok(core.len())
}

/// Runs the model validator on `files`; returns its report.
fn validate_models(files: &[PathBuf]) -> anyhow::Result<std::process::Output> {
    let node_modules = validators_dir()?.join("node/node_modules");
    Ok(Command::new("node")
        .arg(repo_root().join("tests/deploy/validate-models.mjs"))
        .args(files)
        .env("FERRY_K8S_MODELS", node_modules)
        .output()?)
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let target = to.join(path.file_name().expect("a name"));
        if path.is_dir() {
            copy_tree(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

/// The pod spec of a Job or of a ScaledJob's job template.
fn pod_spec(object: &serde_json::Value) -> &serde_json::Value {
    match object["kind"].as_str() {
        Some("ScaledJob") => &object["spec"]["jobTargetRef"]["template"]["spec"],
        _ => &object["spec"]["template"]["spec"],
    }
}

/// Ferry's exit-code policy on a Job spec: 2 fails the Job at once, disruptions do not count.
fn assert_exit_policy(job_spec: &serde_json::Value, container: &str) {
    let rules = job_spec["podFailurePolicy"]["rules"]
        .as_array()
        .expect("a podFailurePolicy");
    let fail = rules
        .iter()
        .find(|r| r["action"] == "FailJob")
        .expect("a FailJob rule");
    assert_eq!(fail["onExitCodes"]["values"], serde_json::json!([2]));
    assert_eq!(fail["onExitCodes"]["operator"], "In");
    assert_eq!(fail["onExitCodes"]["containerName"], container);
    assert!(rules
        .iter()
        .any(|r| r["action"] == "Ignore" && r["onPodConditions"][0]["type"] == "DisruptionTarget"));
}

#[test]
fn kubernetes_and_argo_manifests_render_and_validate_offline() -> anyhow::Result<()> {
    let root = repo_root();
    let work = tempfile::tempdir()?;
    // The example overlay: KEDA workers.
    let rendered = kustomize(&root.join("deploy/k8s/overlays/example"))?;
    let objects = yaml_to_json(&rendered, work.path())?;
    let kinds: BTreeSet<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Job",
        "ScaledJob",
        "TriggerAuthentication",
    ] {
        assert!(kinds.contains(kind), "no {kind} in {kinds:?}");
    }
    assert_eq!(validate_core(&objects, work.path(), "keda")?, 7);

    // The plain indexed-Job variant: a copy of the tree whose example picks the other component.
    let copy = work.path().join("k8s");
    copy_tree(&root.join("deploy/k8s"), &copy)?;
    let overlay = copy.join("overlays/example/kustomization.yaml");
    let example = std::fs::read_to_string(&overlay)?;
    let swapped = example.replace(
        "  - ../../components/keda-workers",
        "  - ../../components/job-workers",
    );
    assert_ne!(swapped, example);
    std::fs::write(&overlay, swapped)?;
    let plain = yaml_to_json(&kustomize(&copy.join("overlays/example"))?, work.path())?;
    assert!(!plain.iter().any(|o| o["kind"] == "ScaledJob"));
    assert_eq!(validate_core(&plain, work.path(), "plain")?, 8);
    let workers = find(&plain, "Job", "ferry-workers");
    assert_eq!(workers["spec"]["completionMode"], "Indexed");
    assert!(workers["spec"]["parallelism"].as_u64().unwrap_or(0) > 1);
    assert_exit_policy(&workers["spec"], "ferry-worker");

    // The CRD objects against their models; a broken copy must fail (the check can fail).
    let keda_file = work.path().join("rendered.yaml");
    std::fs::write(&keda_file, &rendered)?;
    let argo_file = root.join("deploy/argo/workflowtemplate.yaml");
    let checked = validate_models(&[keda_file.clone(), argo_file.clone()])?;
    let report = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.status.success(), "{report}{}", stderr_of(&checked));
    for object in [
        "ScaledJob/ferry-workers: schema",
        "TriggerAuthentication/ferry-aws: schema",
        "WorkflowTemplate/ferry-migration: schema",
        "3 objects: no field outside the models' types",
    ] {
        assert!(report.contains(object), "{report}");
    }
    let broken = work.path().join("broken.yaml");
    std::fs::write(
        &broken,
        rendered.replace(
            "identityOwner: workload",
            "identityOwner: workload\n    roleArm: x",
        ),
    )?;
    let refused = validate_models(&[broken])?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("roleArm"));

    // What the docs promise, on the rendered objects.
    let account = find(&objects, "ServiceAccount", "ferry");
    assert!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .unwrap_or_default()
            .starts_with("arn:aws:iam::")
    );
    let scaled = find(&objects, "ScaledJob", "ferry-workers");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "aws-sqs-queue");
    assert_eq!(trigger["authenticationRef"]["name"], "ferry-aws");
    assert_eq!(
        find(&objects, "TriggerAuthentication", "ferry-aws")["spec"]["podIdentity"]["provider"],
        "aws"
    );
    assert_exit_policy(&scaled["spec"]["jobTargetRef"], "ferry-worker");
    assert!(
        pod_spec(scaled)["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(0)
            >= 60
    );
    for name in ["ferry-plan", "ferry-finalize"] {
        let job = find(&objects, "Job", name);
        assert_exit_policy(&job["spec"], "ferry");
        let container = &pod_spec(job)["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        // The run id comes from the one ConfigMap, whatever pod (or retry) runs.
        let at = args
            .iter()
            .position(|a| *a == "--run-id")
            .expect("--run-id");
        assert_eq!(args[at + 1], "$(FERRY_RUN_ID)");
        let env = container["env"].as_array().expect("env");
        let run_id = env
            .iter()
            .find(|e| e["name"] == "FERRY_RUN_ID")
            .expect("FERRY_RUN_ID");
        assert_eq!(run_id["valueFrom"]["configMapKeyRef"]["name"], "ferry-run");
        let target = env
            .iter()
            .find(|e| e["name"] == "FERRY_TARGET__URL")
            .expect("target");
        assert_eq!(target["valueFrom"]["secretKeyRef"]["name"], "ferry-target");
        assert!(args.contains(&if name == "ferry-plan" {
            "--submit"
        } else {
            "--wait"
        }));
    }
    let run = find(&objects, "ConfigMap", "ferry-run");
    assert!(!run["data"]["run-id"]
        .as_str()
        .unwrap_or_default()
        .is_empty());
    assert!(
        find(&objects, "ConfigMap", "ferry-config")["data"]["ferry.toml"]
            .as_str()
            .unwrap_or_default()
            .contains("[metrics]")
    );
    // Ferry's own parser accepts the ConfigMap's ferry.toml.
    let toml = work.path().join("ferry.toml");
    std::fs::write(
        &toml,
        find(&objects, "ConfigMap", "ferry-config")["data"]["ferry.toml"]
            .as_str()
            .unwrap_or_default(),
    )?;
    ferry_shared::config::load_settings_from(Some(&toml), Vec::new())?;

    // Argo: retries honour the exit codes; the fan-out runs the worker template.
    let argo = yaml_to_json(&std::fs::read_to_string(&argo_file)?, work.path())?;
    let templates = argo[0]["spec"]["templates"].as_array().expect("templates");
    for template in templates.iter().filter(|t| t.get("container").is_some()) {
        assert_eq!(
            template["retryStrategy"]["expression"], "asInt(lastRetry.exitCode) != 2",
            "{}",
            template["name"]
        );
    }
    let tasks = &templates[0]["dag"]["tasks"];
    assert_eq!(
        tasks[1]["withSequence"]["count"],
        "{{workflow.parameters.workers}}"
    );
    assert_eq!(tasks[2]["depends"], "worker");
    Ok(())
}

/// The CA file every deploy config checks the database's certificate against.
const TARGET_CA: &str = "/etc/ferry-tls/ca.pem";

/// A Python with PyYAML: the validators' when they are installed, else the machine's `python3`.
fn yaml_python() -> PathBuf {
    validators_dir()
        .map(|dir| dir.join("venv/bin/python"))
        .unwrap_or_else(|_| PathBuf::from("python3"))
}

/// YAML documents → JSON values, with [`yaml_python`].
fn yaml_documents(yaml: &str, work: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let file = work.join("documents.yaml");
    std::fs::write(&file, yaml)?;
    let json = run_ok(
        Command::new(yaml_python())
            .arg("-c")
            .arg(
                "import json, sys, yaml\n\
         print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
            )
            .arg(&file),
    )?;
    Ok(serde_json::from_str(&json)?)
}

/// A pod spec mounts the `ca.pem` key of the ferry-target Secret where ferry.toml's sslrootcert
/// points, in every container.
fn assert_mounts_target_ca(pod: &serde_json::Value, what: &str) {
    let volumes = pod["volumes"].as_array().expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v["name"] == "target-ca")
        .unwrap_or_else(|| panic!("{what}: no target-ca volume"));
    assert_eq!(volume["secret"]["secretName"], "ferry-target", "{what}");
    assert_eq!(
        volume["secret"]["items"],
        serde_json::json!([{"key": "ca.pem", "path": "ca.pem"}]),
        "{what}"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert!(!containers.is_empty(), "{what}");
    for container in containers {
        assert_ca_mount(&container["volumeMounts"], what);
    }
}

fn assert_ca_mount(mounts: &serde_json::Value, what: &str) {
    let dir = Path::new(TARGET_CA).parent().expect("a folder");
    assert!(
        mounts
            .as_array()
            .is_some_and(|mounts| mounts.iter().any(|m| m["name"] == "target-ca"
                && m["mountPath"] == dir.to_str().expect("utf-8")
                && m["readOnly"] == true)),
        "{what}: the CA is not mounted at {}: {mounts}",
        dir.display()
    );
}

/// Issue 24: every deploy config connects with `sslmode=verify-full` against a mounted CA file:
/// the cluster's ferry.toml says so (and the example Secret's URL), and every pod of both worker
/// variants, Argo's templates and the Airflow DAG's pods mount the CA where it points; the AWS
/// Batch job definition sets the same and mounts it from the instance. Needs `kubectl` only
/// (and PyYAML).
#[test]
fn every_deploy_config_verifies_the_databases_certificate() -> anyhow::Result<()> {
    use base64::Engine as _;
    let root = repo_root();
    let work = tempfile::tempdir()?;
    let objects = yaml_documents(
        &kustomize(&root.join("deploy/k8s/overlays/example"))?,
        work.path(),
    )?;
    let toml = work.path().join("ferry.toml");
    std::fs::write(
        &toml,
        find(&objects, "ConfigMap", "ferry-config")["data"]["ferry.toml"]
            .as_str()
            .unwrap_or_default(),
    )?;
    let settings = ferry_shared::config::load_settings_from(Some(&toml), Vec::new())?;
    assert_eq!(settings.target.sslmode.as_deref(), Some("verify-full"));
    assert_eq!(settings.target.sslrootcert.as_deref(), Some(TARGET_CA));
    let secret = find(&objects, "Secret", "ferry-target");
    assert!(secret["data"]["ca.pem"].is_string(), "{secret}");
    let url = base64::engine::general_purpose::STANDARD.decode(
        secret["data"]["url"]
            .as_str()
            .unwrap_or_default()
            .replace('\n', ""),
    )?;
    let url = String::from_utf8(url)?;
    assert!(
        url.ends_with(&format!("?sslmode=verify-full&sslrootcert={TARGET_CA}")),
        "{url}"
    );
    for (kind, name) in [
        ("Job", "ferry-plan"),
        ("Job", "ferry-finalize"),
        ("ScaledJob", "ferry-workers"),
    ] {
        assert_mounts_target_ca(pod_spec(find(&objects, kind, name)), name);
    }
    // The plain indexed-Job workers.
    let copy = work.path().join("k8s");
    copy_tree(&root.join("deploy/k8s"), &copy)?;
    let overlay = copy.join("overlays/example/kustomization.yaml");
    let example = std::fs::read_to_string(&overlay)?;
    std::fs::write(
        &overlay,
        example.replace(
            "  - ../../components/keda-workers",
            "  - ../../components/job-workers",
        ),
    )?;
    let plain = yaml_documents(&kustomize(&copy.join("overlays/example"))?, work.path())?;
    assert_mounts_target_ca(
        pod_spec(find(&plain, "Job", "ferry-workers")),
        "job workers",
    );

    // Argo: the workflow's volume, mounted by every container template.
    let argo = yaml_documents(
        &std::fs::read_to_string(root.join("deploy/argo/workflowtemplate.yaml"))?,
        work.path(),
    )?;
    let spec = &argo[0]["spec"];
    let mut pod = serde_json::json!({"volumes": spec["volumes"], "containers": []});
    for template in spec["templates"].as_array().expect("templates") {
        if template.get("container").is_some() {
            pod["containers"]
                .as_array_mut()
                .expect("a list")
                .push(template["container"].clone());
        }
    }
    assert_eq!(pod["containers"].as_array().map(Vec::len), Some(3));
    assert_mounts_target_ca(&pod, "argo");

    // Airflow: the KubernetesPodOperator's volume and mount.
    let dag = std::fs::read_to_string(root.join("deploy/airflow/ferry_migration.py"))?;
    for needle in [
        "secret_name=\"ferry-target\", items=[k8s.V1KeyToPath(key=\"ca.pem\", path=\"ca.pem\")]",
        "k8s.V1VolumeMount(name=\"target-ca\", mount_path=\"/etc/ferry-tls\", read_only=True)",
    ] {
        assert!(dag.contains(needle), "the DAG lacks {needle}");
    }

    // AWS Batch: the same settings, and the CA mounted from the instance.
    let definition: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("deploy/aws-batch/job-definition.json"),
    )?)?;
    let container = &definition["containerProperties"];
    let env = container["environment"].as_array().expect("environment");
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    };
    assert_eq!(value("FERRY_TARGET__SSLMODE"), Some("verify-full"));
    assert_eq!(value("FERRY_TARGET__SSLROOTCERT"), Some(TARGET_CA));
    assert_ca_mount(
        &serde_json::json!(container["mountPoints"]
            .as_array()
            .expect("mountPoints")
            .iter()
            .map(|m| serde_json::json!({
                "name": m["sourceVolume"],
                "mountPath": m["containerPath"],
                "readOnly": m["readOnly"],
            }))
            .collect::<Vec<_>>()),
        "aws batch",
    );
    assert!(container["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .any(|v| v["name"] == "target-ca" && v["host"]["sourcePath"] == "/etc/ferry-tls"));
    // Every target URL a deploy file spells out asks for verify-full (the local stack's loopback
    // servers aside).
    let mut stack = vec![root.join("deploy")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(
                std::fs::read_dir(&path)?
                    .map(|e| e.map(|e| e.path()))
                    .collect::<Result<Vec<_>, _>>()?,
            );
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (at, _) in text.match_indices("postgres://") {
            let url: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | '`'))
                .collect();
            if url.contains("127.0.0.1") || url.ends_with('…') || url.ends_with("://") {
                continue;
            }
            assert!(
                url.contains("sslmode=verify-full") && url.contains("sslrootcert="),
                "{}: {url}",
                path.display()
            );
        }
    }
    Ok(())
}

/// Every `--flag` in `text` after each `program` name, up to the next binary's name.
fn flags_after(text: &str, program: &str) -> BTreeSet<String> {
    let mut flags = BTreeSet::new();
    for chunk in text.split(program).skip(1) {
        let chunk = chunk
            .split("ferry-coordinator")
            .next()
            .unwrap_or_default()
            .split("ferry-worker")
            .next()
            .unwrap_or_default();
        flags.extend(flags_in(chunk));
    }
    flags
}

fn flags_in(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_string)
        .collect()
}

/// The text of a Python list assignment `NAME = [...]` in `source`.
fn python_list<'a>(source: &'a str, name: &str) -> &'a str {
    let start = source
        .find(&format!("\n{name} = ["))
        .unwrap_or_else(|| panic!("no {name} list"));
    let rest = &source[start..];
    &rest[..rest.find(']').expect("a closing bracket")]
}

#[test]
fn every_flag_the_deploy_files_pass_exists() -> anyhow::Result<()> {
    let root = repo_root();
    let read = |file: &str| std::fs::read_to_string(root.join(file));
    // Manifests and requests hold only Ferry commands; their args lists span lines.
    let mut worker_flags = BTreeSet::new();
    let mut coordinator_flags = BTreeSet::new();
    for file in [
        "deploy/k8s/base/plan-job.yaml",
        "deploy/k8s/base/finalize-job.yaml",
        "deploy/k8s/components/job-workers/worker-job.yaml",
        "deploy/argo/workflowtemplate.yaml",
        "deploy/aws-batch/job-definition.json",
        "deploy/aws-batch/submit-plan.json",
        "deploy/aws-batch/submit-finalize.json",
    ] {
        let text = read(file)?.replace('\n', " ");
        worker_flags.extend(flags_after(&text, "ferry-worker"));
        coordinator_flags.extend(flags_after(&text, "ferry-coordinator"));
    }
    // The DAG's argument lists, and the local stack's command lines.
    let dag = read("deploy/airflow/ferry_migration.py")?;
    coordinator_flags.extend(flags_in(python_list(&dag, "PLAN")));
    coordinator_flags.extend(flags_in(python_list(&dag, "FINALIZE")));
    worker_flags.extend(flags_in(python_list(&dag, "WORKER")));
    let script = read("deploy/local/run")?.replace("\\\n", " ");
    for line in script.lines() {
        for (program, flags) in [
            ("$bin/ferry-coordinator", &mut coordinator_flags),
            ("$bin/ferry-worker", &mut worker_flags),
        ] {
            if let Some((_, command)) = line.split_once(program) {
                flags.extend(flags_in(command));
            }
        }
    }
    let help = |args: &[&str]| -> anyhow::Result<String> {
        run_ok(Command::new(binary(args[0])).args(&args[1..]))
    };
    let mut coordinator_help = String::new();
    for command in [
        "plan",
        "finalize",
        "submit",
        "status",
        "queue create",
        "migrate",
    ] {
        let mut args = vec!["ferry-coordinator"];
        args.extend(command.split(' '));
        args.push("--help");
        coordinator_help.push_str(&help(&args)?);
    }
    let worker_help = help(&["ferry-worker", "--help"])?;
    for expected in ["--workers", "--metrics-addr"] {
        assert!(worker_flags.contains(expected), "{worker_flags:?}");
    }
    for expected in ["--submit", "--wait", "--run-id", "--key"] {
        assert!(
            coordinator_flags.contains(expected),
            "{coordinator_flags:?}"
        );
    }
    for flag in &worker_flags {
        assert!(
            worker_help.contains(&format!("{flag} ")),
            "ferry-worker has no {flag}"
        );
    }
    for flag in &coordinator_flags {
        assert!(
            coordinator_help.contains(&format!("{flag} ")),
            "ferry-coordinator has no {flag}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_batch_files_pass_botocore_and_register_on_moto() -> anyhow::Result<()> {
    let root = repo_root();
    let python = validators_dir()?.join("venv/bin/python");
    let check = |folder: &Path| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(&python)
            .arg(root.join("tests/deploy/check-batch.py"))
            .arg(folder)
            .args(["--endpoint", &shared_moto().endpoint()])
            .output()?)
    };
    let output = check(&root.join("deploy/aws-batch"))?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{report}{}", stderr_of(&output));
    assert_eq!(report.matches("ok   ").count(), 5, "{report}");
    assert!(report.contains("job-definition/ferry:"), "{report}");
    // The definition's retry strategy honours Ferry's exit codes.
    let definition: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("deploy/aws-batch/job-definition.json"),
    )?)?;
    assert_eq!(
        definition["retryStrategy"]["evaluateOnExit"][0],
        serde_json::json!({"onExitCode": "2", "action": "EXIT"})
    );
    // A broken copy fails botocore's validation (the check can fail).
    let broken = tempfile::tempdir()?;
    for entry in std::fs::read_dir(root.join("deploy/aws-batch"))? {
        let path = entry?.path();
        std::fs::copy(&path, broken.path().join(path.file_name().expect("a name")))?;
    }
    let workers = broken.path().join("submit-workers.json");
    let text = std::fs::read_to_string(&workers)?.replace("\"arrayProperties\"", "\"arrayProps\"");
    std::fs::write(&workers, text)?;
    let refused = check(broken.path())?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("arrayProps"));
    Ok(())
}

const FLEET_CONFIG: &str = "[load]\nchunk_lines = 500\nblock_lines = 100\n\
     [queue]\nvisibility_timeout_secs = 3\nheartbeat_secs = 1\nwait_secs = 1\n\
     retry_delay_secs = 1\nidle_exit_secs = 4\n";

#[tokio::test(flavor = "multi_thread")]
async fn airflow_runs_the_dag_with_a_retried_worker_to_exact_rows() -> anyhow::Result<()> {
    let root = repo_root();
    let airflow = airflow()?;
    let options = GenOptions {
        seed: 91,
        items: 6_000,
        files: 4,
        ..GenOptions::default()
    };
    let stack = Stack::prepare("airflow_dag", &options, FLEET_CONFIG, |_| Ok(())).await?;
    let home = stack.dir().join("airflow");
    let bin_dir = binary("ferry-worker")
        .parent()
        .expect("a folder")
        .to_path_buf();
    let command = |args: &[&str], execution: &str| {
        let mut command = Command::new(&airflow);
        command
            .args(args)
            .env("AIRFLOW_HOME", &home)
            .env("AIRFLOW__CORE__DAGS_FOLDER", root.join("deploy/airflow"))
            .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
            .env("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
            .env("FERRY_AIRFLOW_EXECUTION", execution)
            .env("FERRY_AIRFLOW_RETRY_DELAY_SECS", "1")
            .env("FERRY_BIN_DIR", &bin_dir)
            .env("FERRY_LOG", "info")
            .env_remove("FERRY_FAILPOINTS")
            .envs(stack.env());
        command
    };
    run_ok(&mut command(&["db", "migrate"], "local"))?;
    // The cluster variant parses (KubernetesPodOperator and its arguments).
    let errors = run_ok(&mut command(
        &["dags", "list-import-errors", "--output", "json"],
        "kubernetes",
    ))?;
    let last = errors
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert_eq!(last.trim(), "[]", "{errors}");
    let k8s_tasks = run_ok(&mut command(
        &["tasks", "list", "ferry_migration"],
        "kubernetes",
    ))?;
    for task in ["plan", "worker", "finalize"] {
        assert!(k8s_tasks.lines().any(|l| l.trim() == task), "{k8s_tasks}");
    }

    let conf = serde_json::json!({
        "run_id": "airflow-run",
        "export": stack.export_url,
        "config": stack.config,
        "workers": 3,
        "shards_per_worker": 1,
        // Each worker's first try dies right after its first commit, as a crashed pod would.
        "drill_failpoints": "after_commit=exit@1",
    })
    .to_string();
    let output = command(
        &["dags", "test", "ferry_migration", "--conf", &conf],
        "local",
    )
    .output()?;
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
    std::fs::write(stack.dir().join("airflow.log"), &log)?;
    assert!(output.status.success(), "{log}");
    assert!(log.contains("state=success"), "{log}");
    assert!(log.contains("exited with 86: retrying"), "{log}");

    // Every task instance and its tries, from Airflow's own database.
    let python = airflow.parent().expect("bin").join("python");
    let states = run_ok(
        Command::new(python)
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         for row in db.execute('SELECT task_id, map_index, try_number, state FROM task_instance \
         ORDER BY task_id, map_index'): print(*row)",
            )
            .arg(home.join("airflow.db")),
    )?;
    let rows: Vec<Vec<&str>> = states.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(rows.len(), 6, "{states}");
    assert!(rows.iter().all(|r| r[3] == "success"), "{states}");
    for (task, map_index) in [("plan", "-1"), ("worker_indexes", "-1"), ("finalize", "-1")] {
        assert!(
            rows.contains(&vec![task, map_index, "1", "success"]),
            "{states}"
        );
    }
    let workers: Vec<&Vec<&str>> = rows.iter().filter(|r| r[0] == "worker").collect();
    assert_eq!(workers.len(), 3, "{states}");
    // The worker that took the first shard died on its first try and succeeded on its second.
    assert!(
        workers.iter().any(|r| r[2] == "2"),
        "no worker was retried:\n{states}"
    );
    let loaded = assert_table_matches(
        &stack.fixture.url,
        "AppTable",
        &stack.fixture.export.export_dir,
    )
    .await?;
    assert_eq!(loaded as u64, stack.fixture.export.total_items);
    let [rows_loaded, rejected, _, shards, done] = stack.ledger_counts("airflow-run").await?;
    assert_eq!((rows_loaded, rejected), (loaded as i64, 0));
    assert_eq!(shards, done);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_stack_script_runs_the_cluster_mode_to_exact_rows() -> anyhow::Result<()> {
    let root = repo_root();
    let work = tempfile::tempdir()?;
    let bin_dir = binary("ferry-worker")
        .parent()
        .expect("a folder")
        .to_path_buf();
    let moto = ferry_tests::moto::moto_binary()?;
    // The script leaves its servers running for a look: stop them however the test ends.
    struct Stop(PathBuf, PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new(&self.0)
                .arg("stop")
                .env("FERRY_LOCAL_DIR", &self.1)
                .output();
        }
    }
    let _stop = Stop(root.join("deploy/local/run"), work.path().to_path_buf());
    let output = Command::new(root.join("deploy/local/run"))
        .env("FERRY_BIN_DIR", &bin_dir)
        .env("FERRY_LOCAL_DIR", work.path())
        .env("FERRY_LOCAL_TARGET", "postgres")
        .env("FERRY_MOTO_BIN", moto)
        .env("ITEMS", "3000")
        .env_remove("FERRY_FAILPOINTS")
        .output()?;
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr_of(&output)
    );
    assert_eq!(output.status.code(), Some(0), "{log}");
    for step in [
        "queue create",
        "plan",
        "submit",
        "worker 1",
        "worker 2",
        "worker 3",
        "status",
        "finalize",
    ] {
        assert!(
            log.contains(&format!("== {step}")),
            "no step {step}:\n{log}"
        );
    }
    assert!(log.contains("items   3000 of 3000 (100.0%)"), "{log}");
    // The script leaves the export and the database's URL for a look afterwards.
    let url = std::fs::read_to_string(work.path().join("target-url"))?;
    let export = work.path().join("export");
    let dirs: Vec<PathBuf> = std::fs::read_dir(export.join("exports/app/AWSDynamoDB"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    assert_eq!(dirs.len(), 1);
    let rows = assert_table_matches(url.trim(), "AppTable", &dirs[0]).await?;
    assert_eq!(rows, 3000);
    let stopped = Command::new(root.join("deploy/local/run"))
        .arg("stop")
        .env("FERRY_LOCAL_DIR", work.path())
        .output()?;
    assert_eq!(stopped.status.code(), Some(0), "{}", stderr_of(&stopped));
    Ok(())
}

#[test]
fn the_grafana_dashboard_queries_only_exposed_metrics_in_valid_promql() -> anyhow::Result<()> {
    let root = repo_root();
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("deploy/grafana/ferry-fleet.json"),
    )?)?;
    let mut exprs = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    exprs.push(expr.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(exprs.len() >= 6, "{exprs:?}");
    // The metric names a process exposes (from a real render).
    let progress = std::sync::Arc::new(ferry_worker::progress::Progress::default());
    progress.chunk_committed(1, 0, ["malformed"], std::time::Duration::ZERO);
    let exposed: BTreeSet<String> = ferry_worker::metrics::Metrics::new(progress, "ferry-worker")
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect();
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("ferry_") {
                assert!(
                    exposed.contains(word),
                    "{expr} queries {word}, not exposed ({exposed:?})"
                );
            }
        }
    }
    // promtool parses every expression (as recording rules; the dashboard's $variables filled).
    let rules: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let e = e
                .replace("$__rate_interval", "5m")
                .replace("$job", "ferry-worker")
                .replace("$instance", ".*");
            format!(
                "      - record: ferry:check_{i}\n        expr: {}",
                serde_json::Value::from(e)
            )
        })
        .collect();
    let work = tempfile::tempdir()?;
    let file = work.path().join("rules.yml");
    std::fs::write(
        &file,
        format!(
            "groups:\n  - name: dashboard\n    rules:\n{}\n",
            rules.join("\n")
        ),
    )?;
    run_ok(
        Command::new(promtool()?)
            .args(["check", "rules"])
            .arg(&file),
    )?;
    Ok(())
}
