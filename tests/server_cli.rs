//! The `tower-cdn` binary as an operator runs it: what it prints at start, and the errors
//! a mistaken command line gets (each names the flags and says what to write).

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

const BINARY: &str = env!("CARGO_BIN_EXE_tower-cdn");

/// Runs the binary to completion (every command here fails before serving).
fn run(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("TOWER_CDN_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_startup_line_names_the_admin_listener() {
    let mut child = Command::new(BINARY)
        .args([
            "--listen",
            "localhost:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--admin-token",
            "secret",
            "--origin",
            "http://127.0.0.1:9",
        ])
        .env("RUST_LOG", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    // Stopped by its own handle, whatever the line said.
    child.kill().expect("the server stops");
    child.wait().unwrap();
    let line = line.expect("no startup line");
    assert!(
        line.starts_with("tower-cdn listening on http://127.0.0.1:"),
        "{line}"
    );
    assert!(line.contains("; admin on http://127.0.0.1:"), "{line}");
}

#[test]
fn flag_errors_name_the_flags_and_what_to_write() {
    let output = run(&["--tls-cert", "cert.pem", "--tls-key", "key.pem"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("add --https-listen ADDR"), "{err}");
    assert!(!err.contains("https_listen"), "{err}");

    let output = run(&["--origin", "http://127.0.0.1:9000/public"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("path = \"/public\""), "{err}");

    let output = run(&["--listen", "example.test:8080"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("localhost:8080"), "{err}");

    let output = run(&["--max-request-body", "1 parsec"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("64KiB"), "{err}");
}

#[test]
fn sign_refuses_a_relative_url_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("tower-cdn-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("seed");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let key = key.to_str().unwrap();

    let output = run(&[
        "sign",
        "--url",
        "/videos/a.mp4",
        "--key-id",
        "K",
        "--key-file",
        key,
    ]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "a URL was printed");
    let err = stderr(&output);
    assert!(err.contains("not an absolute URL"), "{err}");
    assert!(err.contains("https://HOST/videos/a.mp4"), "{err}");

    let output = run(&[
        "sign",
        "--url",
        "https://d.example/videos/a.mp4",
        "--key-id",
        "K",
        "--key-file",
        key,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn subcommand_errors_are_not_configuration_errors() {
    let output = run(&["public-key", "--key-file", "/nonexistent/seed"]);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.starts_with("tower-cdn: public-key: "), "{err}");
    assert!(!err.contains("invalid configuration"), "{err}");
}

#[test]
fn sign_help_shows_each_default_once() {
    let output = run(&["sign", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert_eq!(help.matches("[default: 3600]").count(), 1, "{help}");
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tower-cdn-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts the server with `args` in the working directory `cwd` and returns its startup
/// line, or what it wrote to stderr when it printed none.
fn startup_line(args: &[&str], cwd: &Path) -> Result<String, String> {
    let mut child = Command::new(BINARY)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "off")
        .env_remove("TOWER_CDN_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(20));
    // Stopped by its own handle, whether it serves or has exited.
    let _ = child.kill();
    child.wait().unwrap();
    let mut stderr = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    match line {
        Ok(line) if line.starts_with("tower-cdn listening on ") => Ok(line),
        Ok(line) => Err(format!("stdout: {line:?}; stderr: {stderr}")),
        Err(_) => Err(format!("no startup line; stderr: {stderr}")),
    }
}

#[test]
fn relative_paths_in_the_config_file_are_taken_from_its_directory() {
    let site = TempDir::new("site");
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    site.write("tls/edge.pem", generated.cert.pem());
    site.write("tls/edge.key", generated.signing_key.serialize_pem());
    site.write("keys/h1.secret", [7u8; 32]);
    let config = site.write(
        "edge.toml",
        "listen = \"127.0.0.1:0\"\n\
         https_listen = \"127.0.0.1:0\"\n\
         tls_cert = \"tls/edge.pem\"\n\
         tls_key = \"tls/edge.key\"\n\
         origin = \"http://127.0.0.1:9\"\n\
         [key_groups.members]\n\
         keys = [{ id = \"H1\", hmac_secret_file = \"keys/h1.secret\" }]\n",
    );
    let config = config.to_str().unwrap();
    // Started from another directory, the file still finds what it names.
    let elsewhere = TempDir::new("elsewhere");
    let line = startup_line(&["--config", config], &elsewhere.0).unwrap();
    assert!(line.contains(" and https://127.0.0.1:"), "{line}");

    // Flags are taken from the working directory, as any command line's.
    let flags = [
        "--listen",
        "127.0.0.1:0",
        "--https-listen",
        "127.0.0.1:0",
        "--tls-cert",
        "tls/edge.pem",
        "--tls-key",
        "tls/edge.key",
        "--origin",
        "http://127.0.0.1:9",
    ];
    let line = startup_line(&flags, &site.0).unwrap();
    assert!(line.contains(" and https://127.0.0.1:"), "{line}");
    let err = startup_line(&flags, &elsewhere.0).unwrap_err();
    assert!(err.contains("tls/edge.pem"), "{err}");
}
