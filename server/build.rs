//! Embed `assets/widget/**`, `assets/demo/**` and the schema migrations
//! (`migrations/{sqlite,postgres}/NNNN_name.sql`) into the binary.

use std::fmt::Write as _;
use std::path::Path;

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("js") => "application/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("mp3") => "audio/mpeg",
        Some("ogg") => "audio/ogg",
        Some("wav") => "audio/wav",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn walk(dir: &Path, url_prefix: &str, out: &mut Vec<(String, std::path::PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            walk(&p, &format!("{url_prefix}/{name}"), out);
        } else {
            out.push((format!("{url_prefix}/{name}"), p));
        }
    }
}

fn main() {
    // Read the manifest dir when the script runs, not when it was compiled:
    // cargo reuses a compiled build script across checkouts that share a
    // target dir, and a baked-in path would point at the old checkout.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let root = Path::new(&manifest).join("..").join("assets");
    println!("cargo::rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root.join("widget"), "/widget", &mut files);
    walk(&root.join("demo"), "/demo", &mut files);
    let mut code = String::from("pub static ASSETS: &[Asset] = &[\n");
    for (url, path) in &files {
        println!("cargo::rerun-if-changed={}", path.display());
        let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
        let _ = writeln!(
            code,
            "    ({url:?}, {:?}, include_bytes!({:?})),",
            mime(path),
            abs.display().to_string()
        );
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("assets.rs");
    if let Err(e) = std::fs::write(&out, code) {
        println!("cargo::warning=cannot write {}: {e}", out.display());
    }
    migrations(Path::new(&manifest));
}

/// One `&[Migration]` per engine from its directory, in file-name order, so
/// adding a step is adding a file. A name that is not `NNNN_name.sql`, or
/// versions that are not 1, 2, 3, ... in order, stop the build: a gap or a
/// duplicate would make the version recorded in a database ambiguous.
fn migrations(manifest: &Path) {
    let mut code = String::new();
    for (engine, konst) in [("sqlite", "SQLITE"), ("postgres", "POSTGRES")] {
        let dir = manifest.join("migrations").join(engine);
        println!("cargo::rerun-if-changed={}", dir.display());
        let mut files = Vec::new();
        walk(&dir, "", &mut files);
        let _ = writeln!(code, "pub const {konst}: &[Migration] = &[");
        for (i, (name, path)) in files.iter().enumerate() {
            println!("cargo::rerun-if-changed={}", path.display());
            let name = name.trim_start_matches('/');
            let version = name
                .strip_suffix(".sql")
                .and_then(|n| n.split_once('_'))
                .and_then(|(v, _)| v.parse::<usize>().ok());
            if version != Some(i + 1) {
                let _ = writeln!(
                    code,
                    "];\ncompile_error!({:?});",
                    format!(
                        "migrations/{engine}/{name}: expected version {} as NNNN_name.sql",
                        i + 1
                    )
                );
                break;
            }
            let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
            let _ = writeln!(
                code,
                "    Migration {{ version: {}, name: {:?}, sql: include_str!({:?}) }},",
                i + 1,
                name.trim_end_matches(".sql"),
                abs.display().to_string()
            );
        }
        if !code.ends_with(");\n") {
            code.push_str("];\n");
        }
    }
    let out = Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("migrations.rs");
    if let Err(e) = std::fs::write(&out, code) {
        println!("cargo::warning=cannot write {}: {e}", out.display());
    }
}
