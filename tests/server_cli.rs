//! The `tower-cdn` binary as an operator runs it: what it prints at start, and the errors
//! a mistaken command line gets (each names the flags and says what to write).

use std::{
    io::{BufRead, BufReader},
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
