//! The command line is a contract: these run the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast-server"));
    c.env_remove("HOLDFAST_DATA_DIR")
        .env("HOLDFAST_LOG", "warn");
    c
}

fn run(dir: &std::path::Path, args: &[&str]) -> Output {
    bin()
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap()
}

/// Runs a `serve` that is expected to refuse its settings and exit; one that
/// starts serving instead is killed after a while and fails the test.
fn refused(mut cmd: Command) -> String {
    let mut child = cmd
        .args(["--http", "127.0.0.1:0", "--agent-listen", "127.0.0.1:0"])
        .args(["--admin-listen", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server took settings it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    stderr(&out)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn sites_and_agents_are_managed_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = run(
        d,
        &[
            "site", "add", "shop", "--name", "The Shop", "--secret", "s3cret",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("data-site=\"shop\""));
    let o = run(d, &["site", "add", "shop"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = run(d, &["site", "list"]);
    assert!(
        stdout(&o).contains("shop\tThe Shop\tidentify: verified"),
        "{}",
        stdout(&o)
    );

    let o = bin()
        .args([
            "agent",
            "add",
            "ann",
            "--site",
            "shop",
            "--name",
            "Ann",
            "--capacity",
            "3",
        ])
        .arg("--data-dir")
        .arg(d)
        .env("HOLDFAST_PASSWORD", "first-pass")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        d,
        &[
            "agent",
            "add",
            "zed",
            "--site",
            "nope",
            "--password",
            "pw123",
        ],
    );
    assert!(
        stderr(&o).contains("no site with key \"nope\""),
        "{}",
        stderr(&o)
    );
    let o = run(
        d,
        &[
            "agent",
            "add",
            "bad name!",
            "--site",
            "shop",
            "--password",
            "pw123",
        ],
    );
    assert!(!o.status.success());
    let o = run(d, &["agent", "passwd", "ann", "--password", "second-pass"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        d,
        &["agent", "passwd", "ghost", "--password", "second-pass"],
    );
    assert!(
        stderr(&o).contains("no agent named \"ghost\""),
        "{}",
        stderr(&o)
    );
    let o = run(d, &["agent", "disable", "ann"]);
    assert!(o.status.success());
    let o = run(d, &["agent", "list"]);
    assert!(
        stdout(&o).contains("ann\tAnn\tshop\tagent\tcapacity 3\tdisabled"),
        "{}",
        stdout(&o)
    );
    let o = run(d, &["agent", "disable", "ann", "--enable"]);
    assert!(o.status.success());
    assert!(stdout(&run(d, &["agent", "list"])).contains("enabled"));
    // Roles, capacity and names change without a new account.
    let o = run(
        d,
        &[
            "agent",
            "set",
            "ann",
            "--role",
            "supervisor",
            "--capacity",
            "4",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&run(d, &["agent", "list"])).contains("ann\tAnn\tshop\tsupervisor\tcapacity 4"),
        "{}",
        stdout(&run(d, &["agent", "list"]))
    );
    let o = run(d, &["agent", "set", "ann", "--role", "boss"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown role"), "{}", stderr(&o));
    // Origins the widget may run on: normalised, checked, and listed.
    let o = run(d, &["site", "origins", "shop", "https://Shop.Example/"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&run(d, &["site", "list"])).contains("origins: https://shop.example"),
        "{}",
        stdout(&run(d, &["site", "list"]))
    );
    let o = run(d, &["site", "origins", "shop", "shop.example/path"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not an origin"), "{}", stderr(&o));
    let o = run(d, &["site", "origins", "shop"]);
    assert!(o.status.success());
    assert!(stdout(&run(d, &["site", "list"])).contains("origins: any"));
    // Passwords are stored as argon2id hashes, never as text.
    let db = std::fs::read(d.join("holdfast.db")).unwrap();
    let text = String::from_utf8_lossy(&db);
    assert!(!text.contains("second-pass") && !text.contains("first-pass"));
    assert!(text.contains("$argon2id$"));
}

#[test]
fn fingerprint_is_created_once_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let a = stdout(&run(dir.path(), &["fingerprint"]));
    let b = stdout(&run(dir.path(), &["fingerprint"]));
    assert_eq!(a, b);
    assert_eq!(a.trim().len(), 79, "{a}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(dir.path().join("server.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o600);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_taken_port_is_a_clear_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let o = bin()
        .args(["serve", "--agent-listen", &format!("127.0.0.1:{port}")])
        .args(["--http", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("cannot bind the agent port 127.0.0.1:{port}")),
        "{err}"
    );
}

#[test]
fn demo_mode_prints_the_page_login_and_fingerprint_and_flags_beat_env() {
    let dir = tempfile::tempdir().unwrap();
    let (http, agent) = (free_port(), free_port());
    let fp = stdout(&run(dir.path(), &["fingerprint"]));
    let child = bin()
        .args(["serve", "--demo", "--http", &format!("127.0.0.1:{http}")])
        .arg("--data-dir")
        .arg(dir.path())
        // The agent port comes from the environment; for http the flag must
        // win over the environment's unusable port 1.
        .env("HOLDFAST_AGENT_LISTEN", format!("127.0.0.1:{agent}"))
        .env("HOLDFAST_HTTP", "127.0.0.1:1")
        // Not the default 127.0.0.1:9090, which anything else on the
        // machine (a demo server, another run) may hold.
        .env("HOLDFAST_ADMIN_LISTEN", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", agent)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::net::TcpStream::connect(("127.0.0.1", http)).is_ok());
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let banner = stdout(&out);
    assert!(
        banner.contains(&format!("http://127.0.0.1:{http}/demo")),
        "{banner}"
    );
    assert!(banner.contains("agent login:   demo / demo"), "{banner}");
    assert!(banner.contains(fp.trim()), "{banner}");
}

#[test]
fn every_setting_works_from_the_environment_and_beats_the_file() {
    // preauth_max_frame could once be set only in the file.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("holdfast.toml");
    std::fs::write(&cfg, "preauth_max_frame = 4096\n").unwrap();
    let mut cmd = bin();
    cmd.args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .env("HOLDFAST_PREAUTH_MAX_FRAME", "10");
    let err = refused(cmd);
    assert!(
        err.contains("preauth_max_frame must be at least 1024 bytes, got 10"),
        "{err}"
    );
    let mut cmd = bin();
    cmd.args(["serve", "--preauth-max-frame", "12", "--data-dir"])
        .arg(dir.path())
        .env("HOLDFAST_PREAUTH_MAX_FRAME", "10");
    let err = refused(cmd);
    assert!(err.contains("got 12"), "{err}");
}

#[test]
fn config_file_is_read_and_unknown_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("holdfast.toml");
    std::fs::write(&cfg, "http = \"127.0.0.1:0\"\nbogus_key = 1\n").unwrap();
    let o = bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bogus_key"), "{}", stderr(&o));
}

/// Every key the README's limits table names is one the config file takes:
/// an admin copying a key from the table must not get "unknown field".
#[test]
fn the_readme_limits_table_names_real_config_keys() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let table = readme
        .split("### Limits")
        .nth(1)
        .and_then(|s| s.split("\n### ").next())
        .expect("a Limits section");
    let mut keys = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or_default();
        keys.extend(first.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    assert!(keys.len() > 30, "{keys:?}");
    for key in &keys {
        assert!(
            holdfast_server::config::KEYS.contains(&key.as_str()),
            "{key} is in the README's table but is no setting"
        );
    }
}
