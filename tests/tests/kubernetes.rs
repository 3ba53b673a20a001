//! The Kubernetes manifests (`deploy/k8s/`, a Kustomize base): every one validates strictly
//! against the Kubernetes API's schemas (kubernetes-validate, pinned with hashes from PyPI), the
//! kustomization lists exactly the files there, and the resources keep the deployment's promises:
//! probes on `/healthz` and `/readyz`, the API autoscaled and both kept by disruption budgets, the
//! worker on GPU nodes, secrets only from Secret objects, hardened containers, deny-by-default
//! network policies.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repository() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn k8s_dir() -> PathBuf {
    repository().join("deploy/k8s")
}

/// The virtual environment with kubernetes-validate (and PyYAML), installed once per target dir.
fn validator() -> PathBuf {
    idyntra_tests::fetch_tool(
        "deploy/tools/fetch-kubernetes-validate.sh",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kubernetes-validate"),
    )
}

/// The resource files the kustomization names.
fn kustomized_files(venv: &Path) -> Vec<String> {
    let kustomization = load(venv, &k8s_dir().join("kustomization.yaml"));
    assert_eq!(kustomization.len(), 1);
    kustomization[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|file| file.as_str().unwrap().to_owned())
        .collect()
}

/// Every YAML document of `file`, as JSON.
fn load(venv: &Path, file: &Path) -> Vec<Value> {
    let output = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

fn resources(venv: &Path) -> Vec<Value> {
    kustomized_files(venv)
        .iter()
        .flat_map(|file| load(venv, &k8s_dir().join(file)))
        .collect()
}

fn find<'a>(resources: &'a [Value], kind: &str, name: &str) -> &'a Value {
    resources
        .iter()
        .find(|resource| resource["kind"] == kind && resource["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn validate(venv: &Path, files: &[PathBuf]) -> std::process::Output {
    Command::new(venv.join("bin/kubernetes-validate"))
        .args(["--strict", "--quiet", "--kubernetes-version", "1.31.0"])
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn every_manifest_validates_strictly_and_the_kustomization_lists_them_all() {
    let venv = validator();
    let listed = kustomized_files(&venv);
    let mut present: Vec<String> = std::fs::read_dir(k8s_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    present.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, present, "the kustomization and the folder differ");
    let files: Vec<PathBuf> = listed.iter().map(|file| k8s_dir().join(file)).collect();
    let output = validate(&venv, &files);
    assert!(
        output.status.success(),
        "kubernetes-validate:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The validator is strict: a misspelt field fails.
    let broken = tempfile::tempdir().unwrap();
    let misspelt = broken.path().join("api-deployment.yaml");
    let text = std::fs::read_to_string(k8s_dir().join("api-deployment.yaml")).unwrap();
    std::fs::write(&misspelt, text.replace("readinessProbe:", "readinesProbe:")).unwrap();
    assert!(!validate(&venv, &[misspelt]).status.success());
}

fn containers(deployment: &Value) -> Vec<&Value> {
    let spec = &deployment["spec"]["template"]["spec"];
    spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(spec["initContainers"].as_array().into_iter().flatten())
        .collect()
}

#[test]
fn deployments_are_probed_scaled_budgeted_hardened_and_read_secrets_from_secret_objects() {
    let venv = validator();
    let resources = resources(&venv);
    for name in ["idyntra-api", "idyntra-worker"] {
        let deployment = find(&resources, "Deployment", name);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        let main = &pod["containers"][0];
        assert_eq!(
            main["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{name}"
        );
        assert_eq!(
            main["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{name}"
        );
        for container in containers(deployment) {
            let security = &container["securityContext"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
            let resources = &container["resources"];
            for bound in ["requests", "limits"] {
                assert!(resources[bound]["cpu"].is_string(), "{name}: {bound} cpu");
                assert!(
                    resources[bound]["memory"].is_string(),
                    "{name}: {bound} memory"
                );
            }
            // Secrets are files from the Secret volume, never values in the manifest.
            for variable in container["env"].as_array().unwrap() {
                let variable_name = variable["name"].as_str().unwrap();
                if variable_name.ends_with("_FILE") {
                    assert!(
                        variable["value"]
                            .as_str()
                            .unwrap()
                            .starts_with("/run/secrets/idyntra/")
                    );
                } else {
                    for word in [
                        "PEPPER",
                        "PRIVATE_KEY",
                        "MASTER_KEY",
                        "DATABASE_URL",
                        "REDIS_URL",
                    ] {
                        assert!(!variable_name.contains(word), "{name}: {variable_name}");
                    }
                }
            }
        }
        let secret_volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == "secrets")
            .unwrap();
        assert_eq!(secret_volume["secret"]["secretName"], "idyntra-secrets");
        let selector = &deployment["spec"]["selector"]["matchLabels"];
        let budget = find(&resources, "PodDisruptionBudget", name);
        assert_eq!(
            &budget["spec"]["selector"]["matchLabels"], selector,
            "{name}"
        );
    }
    let hpa = find(&resources, "HorizontalPodAutoscaler", "idyntra-api");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "idyntra-api");
    assert!(hpa["spec"]["minReplicas"].as_u64().unwrap() >= 2);
    let worker = &find(&resources, "Deployment", "idyntra-worker")["spec"]["template"]["spec"];
    assert_eq!(worker["nodeSelector"]["nvidia.com/gpu.present"], "true");
    assert_eq!(
        worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
        1
    );
    assert_eq!(
        worker["containers"][0]["args"],
        serde_json::json!(["worker"])
    );
}

#[test]
fn the_network_is_denied_by_default_and_the_api_is_reached_only_through_the_ingress() {
    let venv = validator();
    let resources = resources(&venv);
    let deny = find(&resources, "NetworkPolicy", "default-deny");
    assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
    assert_eq!(
        deny["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());
    let ingress = find(&resources, "Ingress", "idyntra-api");
    let paths: Vec<&str> = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|path| path["path"].as_str().unwrap())
        .collect();
    assert!(
        !paths.contains(&"/metrics") && !paths.contains(&"/"),
        "{paths:?}"
    );
    assert!(ingress["spec"]["tls"][0]["secretName"].is_string());
}
