//! deploy/kubernetes: no cluster runs here, so the manifests are checked against the
//! Kubernetes schemas (kubernetes-validate) and against each other and the exporter: the
//! names, ports, labels, secrets and variables one file uses must be the ones the others
//! and the exporter give.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use withings_exporter::config::settings::SETTINGS;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every document of one manifest file.
fn documents(file: &str) -> Vec<Value> {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn one(file: &str) -> Value {
    let mut docs = documents(file);
    assert_eq!(docs.len(), 1, "{file} holds one resource");
    docs.remove(0)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

fn manifests() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

#[test]
#[ignore = "needs kubernetes-validate (PyPI package kubernetes-validate)"]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas() {
    for file in manifests() {
        // The Prometheus Operator's resources are checked by the test below: the schemas
        // of custom resources are not in kubernetes-validate.
        if documents(&file)
            .iter()
            .all(|d| str_at(d, "/apiVersion").starts_with("monitoring.coreos.com/"))
        {
            continue;
        }
        let output = Command::new("kubernetes-validate")
            .args(["--strict", "--quiet"])
            .arg(dir().join(&file))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run kubernetes-validate: {e} (.ci/run installs it)")
            });
        assert!(
            output.status.success(),
            "{file} fails the Kubernetes schema:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_kustomization_names_every_manifest_and_one_namespace() {
    let kustomization = one("kustomization.yaml");
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file name").to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, manifests());
    assert!(!str_at(&kustomization, "/namespace").is_empty());
}

#[test]
fn one_replica_of_a_statefulset_with_its_tokens_on_a_persistent_volume() {
    let set = one("statefulset.yaml");
    assert_eq!(str_at(&set, "/kind"), "StatefulSet");
    // Refresh tokens are single-use: two pods would refresh one account's chain twice.
    assert_eq!(set.pointer("/spec/replicas"), Some(&Value::from(1)));
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let token_dir = env(container, "WITHINGS_TOKEN_DIR").expect("WITHINGS_TOKEN_DIR");
    let claim = str_at(&set, "/spec/volumeClaimTemplates/0/metadata/name");
    let mounted = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == claim)
        .expect("the token volume is mounted");
    assert_eq!(str_at(mounted, "/mountPath"), token_dir);
    assert_eq!(
        env(container, "WITHINGS_TOKEN_FILE").as_deref(),
        Some(""),
        "the image's single-account default must be cleared next to WITHINGS_TOKEN_DIR"
    );
    assert_eq!(
        set.pointer("/spec/template/spec/securityContext/runAsNonRoot"),
        Some(&Value::Bool(true))
    );
}

/// A container's plain `value` of `name`, `None` when unset or taken from elsewhere.
fn env(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(str::to_owned)
}

#[test]
fn every_variable_set_is_a_setting_of_the_exporter() {
    let set = one("statefulset.yaml");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    for e in container["env"].as_array().expect("env") {
        let name = str_at(e, "/name");
        assert!(
            SETTINGS.iter().any(|s| s.variable == name),
            "statefulset.yaml sets {name}, which the exporter does not read"
        );
    }
}

#[test]
fn labels_ports_and_secrets_agree() {
    let set = one("statefulset.yaml");
    let service = one("service.yaml");
    let secret = one("secret.yaml");
    let pod = &set["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    // The Service and the StatefulSet select the pods by the labels the pods carry.
    for selector in [
        &set["spec"]["selector"]["matchLabels"],
        &service["spec"]["selector"],
    ] {
        for (key, value) in selector.as_object().expect("a selector") {
            assert_eq!(&pod["metadata"]["labels"][key], value, "selector {key}");
        }
    }
    assert_eq!(
        str_at(&set, "/spec/serviceName"),
        str_at(&service, "/metadata/name")
    );
    // The Service's port reaches the port the exporter listens on.
    let port = &service["spec"]["ports"][0];
    let target = str_at(port, "/targetPort");
    let container_port = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == target)
        .expect("the Service's targetPort names a container port");
    let listen = env(container, "WITHINGS_LISTEN_ADDRESS").expect("WITHINGS_LISTEN_ADDRESS");
    assert_eq!(
        listen.rsplit(':').next().map(str::to_owned),
        container_port["containerPort"]
            .as_u64()
            .map(|p| p.to_string())
    );
    // Every key the pod takes from the Secret is in it, and every file variable points at
    // a file the Secret's volume holds.
    let keys = secret["stringData"].as_object().expect("stringData");
    let secret_name = str_at(&secret, "/metadata/name");
    for e in container["env"].as_array().expect("env") {
        if let Some(reference) = e.pointer("/valueFrom/secretKeyRef") {
            assert_eq!(str_at(reference, "/name"), secret_name);
            assert!(keys.contains_key(str_at(reference, "/key")), "{e}");
        }
    }
    let volume = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v.pointer("/secret/secretName").and_then(Value::as_str) == Some(secret_name))
        .expect("the Secret is mounted");
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the Secret's volume is mounted");
    let mount_path = str_at(mount, "/mountPath");
    let files: Vec<String> = volume["secret"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            assert!(keys.contains_key(str_at(item, "/key")), "{item}");
            format!("{mount_path}/{}", str_at(item, "/path"))
        })
        .collect();
    let remote_write: Value =
        serde_norway::from_str(keys["remote-write.yml"].as_str().expect("remote-write.yml"))
            .expect("remote-write.yml is YAML");
    let mut paths: Vec<String> = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter(|e| str_at(e, "/name").ends_with("_FILE"))
        .filter_map(|e| e["value"].as_str())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    paths.push(str_at(&remote_write, "/basic_auth/password_file").to_owned());
    for path in paths {
        assert!(
            files.contains(&path),
            "{path} is not a file of the Secret's volume"
        );
    }
}

#[test]
fn prometheus_discovers_the_accounts_from_the_exporters_service() {
    let service = one("service.yaml");
    let namespace = str_at(&one("kustomization.yaml"), "/namespace").to_owned();
    let host = format!(
        "{}.{namespace}.svc:{}",
        str_at(&service, "/metadata/name"),
        service["spec"]["ports"][0]["port"]
    );
    let configs = documents("scrapeconfig.yaml");
    // The fields of the Prometheus Operator's ScrapeConfig these use (its CRD schema is not
    // available offline): a misspelt one would be dropped by the API server.
    let known = [
        "jobName",
        "scrapeInterval",
        "scrapeTimeout",
        "metricsPath",
        "httpSDConfigs",
        "staticConfigs",
    ];
    for config in &configs {
        assert_eq!(
            str_at(config, "/apiVersion"),
            "monitoring.coreos.com/v1alpha1"
        );
        assert_eq!(str_at(config, "/kind"), "ScrapeConfig");
        for key in config["spec"].as_object().expect("spec").keys() {
            assert!(known.contains(&key.as_str()), "ScrapeConfig field {key}?");
        }
    }
    let job = |name: &str| {
        configs
            .iter()
            .find(|c| c["spec"]["jobName"] == name)
            .unwrap_or_else(|| panic!("a ScrapeConfig with jobName {name}"))
    };
    // The jobs the shipped rules and dashboard expect (prometheus/prometheus.yml's).
    let accounts = job("withings");
    assert_eq!(
        str_at(accounts, "/spec/httpSDConfigs/0/url"),
        format!("http://{host}/sd")
    );
    let own = job("withings-exporter");
    assert_eq!(str_at(own, "/spec/staticConfigs/0/targets/0"), host);
    // The series the exporter writes by remote write join the scraped ones.
    let set = one("statefulset.yaml");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env(container, "WITHINGS_REMOTE_WRITE_INSTANCE"),
        Some(host.clone())
    );
    let prometheus_yml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("prometheus/prometheus.yml"),
    )
    .expect("prometheus.yml");
    for name in ["withings", "withings-exporter"] {
        assert!(
            prometheus_yml.contains(&format!("job_name: {name}\n")),
            "{name}"
        );
    }
}

/// The Secret's remote-write file is one the exporter accepts, read as the pod would read it
/// (its files laid out as the Secret's volume lays them out).
#[test]
fn the_secrets_remote_write_file_is_accepted_by_the_exporter() {
    let secret = one("secret.yaml");
    let set = one("statefulset.yaml");
    let container = &set["spec"]["template"]["spec"]["containers"][0];
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == "secret")
        .expect("the Secret's volume is mounted");
    let mount_path = str_at(mount, "/mountPath");
    let volume = tempfile::tempdir().expect("temp dir");
    let here = volume.path().display().to_string();
    for (key, value) in secret["stringData"].as_object().expect("stringData") {
        let text = value.as_str().expect("a string").replace(mount_path, &here);
        std::fs::write(volume.path().join(key), text).expect("written");
    }
    let file = env(container, "WITHINGS_REMOTE_WRITE_CONFIG_FILE")
        .expect("WITHINGS_REMOTE_WRITE_CONFIG_FILE")
        .replace(mount_path, &here);
    let destination = withings_exporter::remote_write::settings::from_file(Path::new(&file), None)
        .unwrap_or_else(|e| panic!("{e}"));
    let shown = format!("{destination:?}");
    assert!(shown.contains("mimir.example.org"), "{shown}");
    assert!(
        !shown.contains("REPLACE-with-the-remote-write-password"),
        "{shown}"
    );
}
