//! The installers: the Windows MSI (built with wixl), the two Debian
//! packages, and the macOS app bundle's dry run.
//!
//! Each test runs the same script a release build runs (`installer/...`) and
//! then inspects what it made with the platform's own tools: `msiinfo` and
//! `msiextract` for the MSI, `dpkg-deb`, `dpkg --root` and
//! `systemd-analyze verify` for the debs, `plistlib` for the Info.plist.
//! `scripts/test-all` installs those tools. What only Windows or macOS can
//! check runs in `.github/workflows/installers.yml` (see installer/README.md).
//!
//! The MSI's payload: the real `holdfast-agent.exe`, cross-compiled for
//! x86_64-pc-windows-gnu in the dev profile into `target/installer-cross`
//! (the first build takes minutes; later ones are incremental), or the exe
//! named by `HOLDFAST_MSI_EXE`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use holdfast_tests::server::{agent_app_binary, free_port, server_binary};

// ------------------------------------------------------------------ helpers

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/` (or CARGO_TARGET_DIR) of this test run.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test>
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

fn workspace_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// Run, require success, return stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last line a build script prints is the path of what it built.
fn built(stdout: &str) -> PathBuf {
    PathBuf::from(stdout.lines().last().expect("a path").trim())
}

/// An MSI table as rows of tab-separated columns (msiinfo's export, without
/// its three header lines: names, types, table name and keys).
fn msi_table(msi: &Path, table: &str) -> Vec<Vec<String>> {
    run(Command::new("msiinfo").arg("export").arg(msi).arg(table))
        .lines()
        .skip(3)
        .map(|l| {
            l.trim_end_matches('\r')
                .split('\t')
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

fn msi_properties(msi: &Path) -> BTreeMap<String, String> {
    msi_table(msi, "Property")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

/// True when the file is a PE32+ (64-bit) x86-64 Windows executable: the
/// MZ header points at "PE\0\0", the machine is AMD64 and the optional
/// header's magic is 0x20b.
fn is_pe32_plus_x64(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bytes.get(..2) != Some(b"MZ") {
        return false;
    }
    let Some(pe) = u32_at(0x3c).map(|o| o as usize) else {
        return false;
    };
    bytes.get(pe..pe + 4) == Some(b"PE\0\0")
        && u16_at(pe + 4) == Some(0x8664)
        && u16_at(pe + 24) == Some(0x20b)
}

// ----------------------------------------------------------------- the MSI

/// The Windows build of the desktop app, cross-compiled once per test run.
fn windows_exe() -> PathBuf {
    if let Ok(p) = std::env::var("HOLDFAST_MSI_EXE") {
        return p.into();
    }
    let triple = "x86_64-pc-windows-gnu";
    // Its own target dir: the main one's lock would stall every other test
    // that builds a binary while this (long) build runs.
    let dir = target_dir().join("installer-cross");
    let started = Instant::now();
    run(Command::new(env!("CARGO"))
        .args(["build", "-q", "--locked", "-p", "holdfast-agent"])
        .args(["--bin", "holdfast-agent", "--target", triple])
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", &dir)
        // Debug info only slows the cab compression down.
        .env("CARGO_PROFILE_DEV_DEBUG", "false"));
    eprintln!(
        "cross-compiled holdfast-agent.exe in {:.0?}",
        started.elapsed()
    );
    dir.join(triple).join("debug").join("holdfast-agent.exe")
}

fn build_msi(out: &Path) -> PathBuf {
    let exe = windows_exe();
    assert!(
        is_pe32_plus_x64(&std::fs::read(&exe).unwrap()),
        "{exe:?} is not PE32+"
    );
    built(&run(Command::new(
        repo().join("installer/windows/build-msi"),
    )
    .arg("--exe")
    .arg(&exe)
    .arg("--out")
    .arg(out)))
}

#[test]
fn msi_installs_the_app_per_machine_with_shortcuts_upgrades_and_preconfig() {
    let tmp = tempfile::tempdir().unwrap();
    let msi = build_msi(tmp.path());
    let version = workspace_version();
    assert_eq!(
        msi.file_name().unwrap().to_str().unwrap(),
        format!("holdfast-agent-{version}-x86_64.msi")
    );

    // Identity, version, scope, upgrades.
    let props = msi_properties(&msi);
    assert_eq!(props["ProductName"], "Holdfast Agent");
    assert_eq!(props["Manufacturer"], "Holdfast");
    assert_eq!(
        props["ProductVersion"],
        version.split(['-', '+']).next().unwrap()
    );
    assert_eq!(
        props["UpgradeCode"], "{AD83948D-0E71-4E6A-85EF-7B9CA1189B91}",
        "the UpgradeCode must never change: it is what lets a new MSI replace an old one"
    );
    assert_eq!(props["ALLUSERS"], "1", "per-machine");
    assert_eq!(props["ARPPRODUCTICON"], "HoldfastIcon.ico");
    let secure: Vec<&str> = props["SecureCustomProperties"].split(';').collect();
    for p in [
        "SERVER",
        "FINGERPRINT",
        "DESKTOPSHORTCUT",
        "WIX_UPGRADE_DETECTED",
    ] {
        assert!(secure.contains(&p), "{p} not secure: {secure:?}");
    }
    let upgrade = msi_table(&msi, "Upgrade");
    assert!(
        upgrade.iter().any(|r| r[0] == props["UpgradeCode"]
            && r[2] == props["ProductVersion"]
            && r[6] == "WIX_UPGRADE_DETECTED"),
        "no major-upgrade row: {upgrade:?}"
    );
    let summary = run(Command::new("msiinfo").arg("suminfo").arg(&msi));
    assert!(summary.contains("Template: x64;1033"), "{summary}");
    let sequence: BTreeMap<String, (String, i64)> = msi_table(&msi, "InstallExecuteSequence")
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].parse().unwrap())))
        .collect();
    let at = |a: &str| {
        sequence
            .get(a)
            .map(|s| s.1)
            .unwrap_or_else(|| panic!("no {a}"))
    };
    assert!(
        at("InstallValidate") < at("RemoveExistingProducts")
            && at("RemoveExistingProducts") < at("InstallInitialize"),
        "the old version must be removed before the new one is installed: {sequence:?}"
    );

    // The files: the exe, 64-bit, under Program Files\Holdfast.
    let dirs: BTreeMap<String, (String, String)> = msi_table(&msi, "Directory")
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
        .collect();
    assert_eq!(
        dirs["INSTALLDIR"],
        ("ProgramFiles64Folder".to_owned(), "Holdfast".to_owned())
    );
    let files = msi_table(&msi, "File");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0][2], "holdfast-agent.exe");
    let components: BTreeMap<String, Vec<String>> = msi_table(&msi, "Component")
        .into_iter()
        .map(|r| (r[0].clone(), r))
        .collect();
    for c in components.values() {
        let attrs: u32 = c[3].parse().unwrap();
        assert!(attrs & 256 != 0, "component {} is not 64-bit", c[0]);
    }
    assert_eq!(components[&files[0][1]][2], "INSTALLDIR");

    let x = tempfile::tempdir().unwrap();
    let listed = run(Command::new("msiextract").arg("-C").arg(x.path()).arg(&msi));
    assert!(listed.contains("holdfast-agent.exe"), "{listed}");
    let exe = std::fs::read(x.path().join("Holdfast/holdfast-agent.exe")).unwrap();
    assert!(is_pe32_plus_x64(&exe), "the installed exe is not PE32+");
    // The MSI ships one file, so the exe may only need Windows' own DLLs,
    // never MinGW's runtime (libgcc_s, libwinpthread, libstdc++).
    let imports = run(Command::new("x86_64-w64-mingw32-objdump")
        .arg("-p")
        .arg(x.path().join("Holdfast/holdfast-agent.exe")));
    let dlls: Vec<&str> = imports
        .lines()
        .filter_map(|l| l.trim().strip_prefix("DLL Name: "))
        .collect();
    assert!(dlls.iter().any(|d| d.eq_ignore_ascii_case("kernel32.dll")));
    for d in &dlls {
        let d = d.to_ascii_lowercase();
        assert!(
            !d.starts_with("libgcc")
                && !d.starts_with("libwinpthread")
                && !d.starts_with("libstdc"),
            "the exe needs {d}, which the MSI does not install"
        );
    }

    // Shortcuts: Start menu always, desktop as its own feature that
    // DESKTOPSHORTCUT=0 leaves out (by lowering INSTALLLEVEL before costing).
    let shortcuts: BTreeMap<String, Vec<String>> = msi_table(&msi, "Shortcut")
        .into_iter()
        .map(|r| (r[1].clone(), r))
        .collect();
    for dir in ["ProgramMenuFolder", "DesktopFolder"] {
        let s = &shortcuts[dir];
        assert_eq!(s[2], "Holdfast Agent");
        assert_eq!(s[4], "[#HoldfastAgentExe]", "shortcut targets the exe");
        assert_eq!(s[8], "HoldfastIcon.ico");
    }
    let icon = msi_table(&msi, "Icon");
    assert_eq!(icon[0][0], "HoldfastIcon.ico");
    let features: BTreeMap<String, i64> = msi_table(&msi, "Feature")
        .into_iter()
        .map(|r| (r[0].clone(), r[5].parse().unwrap()))
        .collect();
    let install_level: i64 = props["INSTALLLEVEL"].parse().unwrap();
    assert!(features["Main"] <= 1 && features["DesktopShortcut"] <= install_level);
    assert!(features["DesktopShortcut"] > 1);
    let fc = msi_table(&msi, "FeatureComponents");
    assert!(fc.contains(&vec![
        "DesktopShortcut".into(),
        shortcuts["DesktopFolder"][3].clone()
    ]));
    let ca: BTreeMap<String, Vec<String>> = msi_table(&msi, "CustomAction")
        .into_iter()
        .map(|r| (r[0].clone(), r))
        .collect();
    let skip = &ca["SkipDesktopShortcut"];
    assert_eq!((skip[2].as_str(), skip[3].as_str()), ("INSTALLLEVEL", "1"));
    let (cond, seq) = &sequence["SkipDesktopShortcut"];
    assert_eq!(cond, "DESKTOPSHORTCUT = \"0\"");
    assert!(*seq < at("CostFinalize"));

    // Preconfiguration: SERVER and FINGERPRINT go to HKLM (root 2) as the
    // values the app reads, and an upgrade keeps the old ones unless new
    // ones are given (AppSearch into PREV_*, then copied when empty).
    let registry: BTreeMap<String, Vec<String>> = msi_table(&msi, "Registry")
        .into_iter()
        .map(|r| (r[3].clone(), r))
        .collect();
    for (name, value) in [("Server", "[SERVER]"), ("Fingerprint", "[FINGERPRINT]")] {
        let r = &registry[name];
        assert_eq!(
            (r[1].as_str(), r[2].as_str(), r[4].as_str()),
            ("2", r"SOFTWARE\Holdfast\Agent", value)
        );
    }
    let locators = msi_table(&msi, "RegLocator");
    for name in ["Server", "Fingerprint"] {
        assert!(
            locators.iter().any(|r| r[1] == "2"
                && r[2] == r"SOFTWARE\Holdfast\Agent"
                && r[3] == name
                && r[4] == "18"), // raw, 64-bit view
            "no 64-bit registry search for {name}: {locators:?}"
        );
    }
    for (action, prop) in [("KeepServer", "SERVER"), ("KeepFingerprint", "FINGERPRINT")] {
        assert_eq!(ca[action][2], prop);
        assert_eq!(ca[action][3], format!("[PREV_{prop}]"));
        let (cond, seq) = &sequence[action];
        assert_eq!(cond, &format!("NOT {prop} AND PREV_{prop}"));
        assert!(at("AppSearch") < *seq && *seq < at("CostFinalize"));
    }

    // User data (%APPDATA%\Holdfast) is outside the package: nothing is
    // installed there, so nothing there is removed.
    assert!(msi_table(&msi, "RemoveFile").is_empty());
    for d in dirs.keys() {
        assert!(!d.contains("AppData"), "the MSI touches {d}");
    }
}

/// Installs under wine when it is there (not installed by test-all: it is a
/// large dependency, and what it checks the Windows CI job checks for real).
#[test]
fn msi_installs_silently_under_wine_when_available() {
    if !have("wine") || !have("msibuild") {
        eprintln!("wine not installed: skipping the install-under-wine check");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let msi = build_msi(tmp.path());
    let prefix = tmp.path().join("prefix");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let wine = |args: &[&str]| {
        let out = Command::new("wine")
            .args(args)
            .env("WINEPREFIX", &prefix)
            .env("WINEARCH", "win64")
            .env("WINEDEBUG", "-all")
            .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
            .env("HOME", &home)
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).replace('\r', ""),
        )
    };
    std::fs::copy(&msi, tmp.path().join("h.msi")).unwrap();
    let msi_win = format!("Z:{}", tmp.path().join("h.msi").display()).replace('/', "\\");
    let (ok, _) = wine(&[
        "msiexec",
        "/i",
        &msi_win,
        "/qn",
        "SERVER=chat.example.com:7070",
        "FINGERPRINT=abcd",
    ]);
    assert!(ok, "silent install failed");
    let installed = prefix.join("drive_c/Program Files/Holdfast/holdfast-agent.exe");
    assert!(installed.exists(), "{installed:?} missing");
    let (ok, reg) = wine(&["reg", "query", r"HKLM\SOFTWARE\Holdfast\Agent", "/reg:64"]);
    assert!(ok, "no registry key");
    assert!(
        reg.contains("Server    REG_SZ    chat.example.com:7070"),
        "{reg}"
    );
    assert!(reg.contains("Fingerprint    REG_SZ    abcd"), "{reg}");
    let (ok, _) = wine(&["msiexec", "/x", &msi_win, "/qn"]);
    assert!(ok, "silent uninstall failed");
    assert!(!installed.exists(), "uninstall left the exe");
    let (ok, _) = wine(&["reg", "query", r"HKLM\SOFTWARE\Holdfast\Agent", "/reg:64"]);
    assert!(!ok, "uninstall left the preconfiguration");
}

// ---------------------------------------------------------------- the debs

struct Deb {
    path: PathBuf,
}

impl Deb {
    fn build(what: &str, bin: &Path, out: &Path) -> Self {
        let path = built(&run(Command::new(repo().join("installer/linux/build-deb"))
            .arg(what)
            .arg("--bin")
            .arg(bin)
            .arg("--fast")
            .arg("--out")
            .arg(out)));
        Deb { path }
    }

    fn field(&self, name: &str) -> String {
        run(Command::new("dpkg-deb")
            .arg("--field")
            .arg(&self.path)
            .arg(name))
        .trim()
        .to_owned()
    }

    fn control_file(&self, name: &str) -> String {
        run(Command::new("dpkg-deb")
            .arg("--info")
            .arg(&self.path)
            .arg(name))
    }

    /// Paths in the data archive, without the leading "." .
    fn contents(&self) -> Vec<String> {
        run(Command::new("dpkg-deb").arg("--contents").arg(&self.path))
            .lines()
            .map(|l| {
                l.split_whitespace()
                    .last()
                    .unwrap()
                    .trim_start_matches('.')
                    .to_owned()
            })
            .collect()
    }
}

/// An empty dpkg root: packages install into it with their maintainer
/// scripts run outside a chroot, against `$DPKG_ROOT`.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        Root { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn dpkg(&self, args: &[&str]) -> String {
        run(Command::new("dpkg")
            .arg(format!("--root={}", self.path().display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args))
    }
}

fn mode_and_owner(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    (m.mode() & 0o7777, m.uid(), m.gid())
}

#[test]
fn server_deb_installs_a_sandboxed_service_with_its_user_data_dir_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = Deb::build("server", &server_binary(), tmp.path());
    assert_eq!(deb.field("Package"), "holdfast-server");
    assert_eq!(deb.field("Version"), workspace_version().replace('-', "~"));
    let depends = deb.field("Depends");
    assert!(
        depends.contains("libc6") && depends.contains("adduser"),
        "{depends}"
    );
    assert_eq!(
        deb.control_file("conffiles").trim(),
        "/etc/holdfast/server.toml"
    );
    let contents = deb.contents();
    for p in [
        "/usr/bin/holdfast-server",
        "/usr/lib/systemd/system/holdfast-server.service",
        "/usr/lib/sysusers.d/holdfast-server.conf",
        "/etc/holdfast/server.toml",
        "/usr/share/doc/holdfast-server/copyright",
    ] {
        assert!(contents.iter().any(|c| c == p), "{p} not in {contents:?}");
    }

    // Install into a throwaway root; the postinst makes the user, the data
    // dir and the permissions there, and enables the unit.
    let root = Root::new();
    root.dpkg(&["-i", deb.path.to_str().unwrap()]);
    let r = root.path();
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("holdfast:"))
        .expect("no holdfast user")
        .split(':')
        .collect();
    let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), user[3].parse().unwrap());
    assert!(uid < 1000, "not a system user: {user:?}");
    assert_eq!(
        (user[5], user[6]),
        ("/var/lib/holdfast", "/usr/sbin/nologin")
    );
    assert_eq!(
        mode_and_owner(&r.join("var/lib/holdfast")),
        (0o750, uid, gid)
    );
    assert_eq!(
        mode_and_owner(&r.join("etc/holdfast/server.toml")),
        (0o640, 0, gid)
    );
    let wants = r.join("etc/systemd/system/multi-user.target.wants/holdfast-server.service");
    if have("systemctl") {
        assert!(wants.is_symlink(), "the unit is not enabled");
    }
    let status = std::fs::read_to_string(r.join("var/lib/dpkg/status")).unwrap();
    assert!(status.contains("Status: install ok installed"), "{status}");

    // The unit file is valid (against the installed binary).
    let unit =
        std::fs::read_to_string(r.join("usr/lib/systemd/system/holdfast-server.service")).unwrap();
    for line in [
        "User=holdfast",
        "Environment=HOLDFAST_DATA_DIR=/var/lib/holdfast",
        "ExecStart=/usr/bin/holdfast-server serve --config /etc/holdfast/server.toml",
        "StateDirectory=holdfast",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    if have("systemd-analyze") {
        let check = tmp.path().join("holdfast-server.service");
        let bin = r.join("usr/bin/holdfast-server");
        std::fs::write(
            &check,
            unit.replace("/usr/bin/holdfast-server", bin.to_str().unwrap()),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&check)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify: {said}"
        );
    } else {
        eprintln!("systemd-analyze not installed: unit not verified");
    }

    // The installed binary runs with the installed config.
    let data = tmp.path().join("data");
    let (http, agents) = (free_port(), free_port());
    let mut server = Command::new(r.join("usr/bin/holdfast-server"))
        .args(["serve", "--config"])
        .arg(r.join("etc/holdfast/server.toml"))
        .arg("--data-dir")
        .arg(&data)
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--agent-listen", &format!("127.0.0.1:{agents}")])
        // The default admin port may be held by anything else on the
        // machine; this test is about the packaged config and unit.
        .args(["--admin-listen", "off"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let healthy = wait_healthy(http, Duration::from_secs(20));
    let _ = server.kill();
    let mut log = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let _ = server.wait();
    assert!(healthy, "the packaged server did not come up:\n{log}");

    // Remove keeps config and data; purge removes the config, keeps the data.
    root.dpkg(&["-r", "holdfast-server"]);
    assert!(!r.join("usr/bin/holdfast-server").exists());
    assert!(r.join("etc/holdfast/server.toml").exists());
    root.dpkg(&["--purge", "holdfast-server"]);
    assert!(!r.join("etc/holdfast/server.toml").exists());
    assert!(
        r.join("var/lib/holdfast").is_dir(),
        "purge removed the data"
    );
    assert!(!wants.exists(), "purge left the unit enabled");
}

fn wait_healthy(port: u16, within: Duration) -> bool {
    use std::io::Write as _;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut first = String::new();
            if BufReader::new(s).read_line(&mut first).is_ok() && first.contains(" 200 ") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn agent_deb_installs_the_app_with_menu_entry_icons_and_preconfig_file() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = Deb::build("agent", &agent_app_binary(), tmp.path());
    assert_eq!(deb.field("Package"), "holdfast-agent");
    assert!(deb.field("Depends").contains("libxkbcommon0"));
    assert_eq!(
        deb.control_file("conffiles").trim(),
        "/etc/holdfast/agent.toml"
    );
    let contents = deb.contents();
    for p in [
        "/usr/bin/holdfast-agent",
        "/usr/share/applications/holdfast-agent.desktop",
        "/usr/share/icons/hicolor/scalable/apps/holdfast-agent.svg",
        "/usr/share/icons/hicolor/256x256/apps/holdfast-agent.png",
        "/etc/holdfast/agent.toml",
    ] {
        assert!(contents.iter().any(|c| c == p), "{p} not in {contents:?}");
    }

    let root = Root::new();
    root.dpkg(&["-i", deb.path.to_str().unwrap()]);
    let r = root.path();
    let desktop = r.join("usr/share/applications/holdfast-agent.desktop");
    let entry = std::fs::read_to_string(&desktop).unwrap();
    assert!(entry.contains("\nExec=holdfast-agent\n") && entry.contains("\nIcon=holdfast-agent\n"));
    if have("desktop-file-validate") {
        let said = run(Command::new("desktop-file-validate").arg(&desktop));
        assert!(said.trim().is_empty(), "desktop-file-validate: {said}");
    }
    let png =
        std::fs::read(r.join("usr/share/icons/hicolor/256x256/apps/holdfast-agent.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        256,
        "width"
    );

    // The preconfiguration template sets nothing until the admin edits it.
    let conf = std::fs::read_to_string(r.join("etc/holdfast/agent.toml")).unwrap();
    assert!(conf.contains("server = ") && conf.contains("fingerprint = "));
    assert!(
        conf.lines()
            .all(|l| l.trim().is_empty() || l.starts_with('#')),
        "the shipped agent.toml must set nothing:\n{conf}"
    );

    // The packaged binary runs (clap answers before any window opens).
    let v = run(Command::new(r.join("usr/bin/holdfast-agent")).arg("--version"));
    assert!(v.contains(&workspace_version()), "{v}");

    root.dpkg(&["--purge", "holdfast-agent"]);
    assert!(!r.join("usr/bin/holdfast-agent").exists());
    assert!(!r.join("etc/holdfast/agent.toml").exists());
}

// -------------------------------------------------------------- the macOS bundle

#[test]
fn macos_dry_run_lays_out_the_bundle_with_a_valid_info_plist() {
    let tmp = tempfile::tempdir().unwrap();
    let fp = "1a2b:3c4d:5e6f:7081:92a3:b4c5:d6e7:f809:1a2b:3c4d:5e6f:7081:92a3:b4c5:d6e7:f809";
    let out = Command::new(repo().join("installer/macos/build-dmg"))
        .args([
            "--dry-run",
            "--server",
            "chat.example.com:7070",
            "--fingerprint",
            fp,
        ])
        .arg("--out")
        .arg(tmp.path())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let dmg = built(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(
        dmg.file_name().unwrap().to_str().unwrap(),
        format!("holdfast-agent-{}-universal.dmg", workspace_version())
    );
    // What would run on a Mac.
    for step in [
        "lipo -create",
        "--target aarch64-apple-darwin",
        "--target x86_64-apple-darwin",
        "codesign --force --sign -",
        "hdiutil create",
    ] {
        assert!(said.contains(step), "dry run does not show {step}:\n{said}");
    }

    let app = tmp.path().join("Holdfast Agent.app/Contents");
    for f in [
        "Info.plist",
        "PkgInfo",
        "MacOS/holdfast-agent",
        "Resources/holdfast.icns",
    ] {
        assert!(app.join(f).is_file(), "{f} missing");
    }
    let icns = std::fs::read(app.join("Resources/holdfast.icns")).unwrap();
    assert_eq!(&icns[..4], b"icns");
    assert_eq!(
        u32::from_be_bytes(icns[4..8].try_into().unwrap()) as usize,
        icns.len()
    );
    assert!(
        icns.windows(4).any(|w| w == b"ic10"),
        "no 1024px (512@2x) icon"
    );
    let staged = tmp.path().join("dmg-root");
    assert_eq!(
        std::fs::read_link(staged.join("Applications")).unwrap(),
        Path::new("/Applications")
    );
    assert!(
        staged
            .join("Holdfast Agent.app/Contents/Info.plist")
            .is_file()
    );

    let check = r#"
import plistlib, sys
p = plistlib.load(open(sys.argv[1], "rb"))
assert p["CFBundleExecutable"] == "holdfast-agent", p
assert p["CFBundleIconFile"] == "holdfast.icns", p
assert p["CFBundleIdentifier"] == "io.holdfast.agent", p
assert p["CFBundlePackageType"] == "APPL", p
assert p["NSHighResolutionCapable"] is True, p
print(p["CFBundleShortVersionString"], p["LSMinimumSystemVersion"])
"#;
    let said = run(Command::new("python3")
        .args(["-c", check])
        .arg(app.join("Info.plist")));
    assert_eq!(
        said.trim(),
        format!("{} 11.0", workspace_version().split('-').next().unwrap())
    );
    if have("plistutil") {
        run(Command::new("plistutil")
            .arg("-i")
            .arg(app.join("Info.plist"))
            .arg("-o")
            .arg(tmp.path().join("Info.bin")));
    }
    let conf = std::fs::read_to_string(app.join("Resources/agent.toml")).unwrap();
    assert!(
        conf.contains("server = \"chat.example.com:7070\"\n"),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("fingerprint = \"{fp}\"\n")),
        "{conf}"
    );
}

// ----------------------------------------------------------- the scripts

#[test]
fn installer_scripts_are_shellcheck_clean() {
    if !have("shellcheck") {
        eprintln!("shellcheck not installed: scripts not checked");
        return;
    }
    let r = repo();
    let scripts = [
        "installer/build-all",
        "installer/lib.sh",
        "installer/windows/build-msi",
        "installer/linux/build-deb",
        "installer/macos/build-dmg",
        "installer/linux/server/postinst",
        "installer/linux/server/prerm",
        "installer/linux/server/postrm",
        "assets/icons/render",
    ];
    run(Command::new("shellcheck")
        .arg("-x")
        .args(scripts)
        .current_dir(&r));
}
