//! The repository's documentation and package metadata, checked as a
//! newcomer (or crates.io) would meet them: publishable crates, no API
//! names that no longer exist, examples that run as written.
//!
//! These read files of the workspace around this crate; run from a packaged
//! crate alone (no workspace around it), they skip.
#![allow(clippy::print_stderr)] // the skip messages

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The workspace root, when this crate sits in its workspace.
fn root() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.join("docs").is_dir().then_some(root)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every Markdown file a user reads: docs/, the READMEs.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.push(root.join("README.md"));
    for krate in ["proto", "peer", "cli"] {
        files.push(root.join("crates").join(krate).join("README.md"));
    }
    files.push(root.join("crates/peer/js/README.md"));
    files
}

#[test]
fn crates_are_publishable() {
    let Some(root) = root() else {
        eprintln!("skipped: not in the workspace");
        return;
    };
    let workspace = read(&root.join("Cargo.toml"));
    assert!(
        workspace.contains(r#"repository = "https://github.com/gotalk-rs/gotalk-rs""#),
        "the workspace's repository field"
    );
    assert!(!workspace.contains("example.invalid"), "a placeholder URL");
    for krate in ["proto", "peer", "cli"] {
        let dir = root.join("crates").join(krate);
        let manifest = read(&dir.join("Cargo.toml"));
        for field in [
            "repository.workspace = true",
            "homepage.workspace = true",
            r#"readme = "README.md""#,
        ] {
            assert!(manifest.contains(field), "{krate}: no `{field}`");
        }
        assert!(
            !manifest.contains("publish = false"),
            "{krate}: not published"
        );
        let readme = read(&dir.join("README.md"));
        assert!(readme.len() > 200, "{krate}: README.md is too short");
        // crates.io renders READMEs out of the repository: relative links
        // to files outside the crate break there.
        assert!(
            !readme.contains("](../"),
            "{krate}: README.md links outside the crate with a relative path"
        );
    }
    // docs.rs builds with default features unless told: `ws` and `tls`
    // would be missing.
    for krate in ["proto", "peer"] {
        let manifest = read(&root.join("crates").join(krate).join("Cargo.toml"));
        let metadata = manifest
            .split_once("[package.metadata.docs.rs]")
            .unwrap_or_else(|| panic!("{krate}: no [package.metadata.docs.rs]"))
            .1;
        let section = metadata.split("\n[").next().unwrap();
        assert!(
            section.contains("all-features = true"),
            "{krate}: docs.rs must build all features"
        );
    }
    let ci = read(&root.join(".ci/run"));
    assert!(
        ci.contains("cargo package --workspace"),
        "CI packages the crates"
    );
}

/// Names the library had once and has no more.
const STALE: &[&str] = &[
    "TlsServer",
    "WsServer",
    "ServeHandle",
    "Error::Io",
    "Error::Json",
    "Error::Unsupported",
    "example.invalid",
];

#[test]
fn docs_name_no_stale_api() {
    let Some(root) = root() else {
        eprintln!("skipped: not in the workspace");
        return;
    };
    let mut problems = Vec::new();
    for path in markdown_files(&root) {
        let text = read(&path);
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        for (n, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", n + 1);
            for stale in STALE {
                // Whole names only: `ConnectError::Io` and
                // `UsageError::Unsupported` exist.
                let hits = line.match_indices(stale).filter(|(i, _)| {
                    !line[..*i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                if hits.count() > 0 {
                    problems.push(format!("{at}: {stale}: {line}"));
                }
            }
            for (i, _) in line.match_indices("UnsupportedVersion") {
                let before = &line[..i];
                if !(before.ends_with("HandshakeError::") || before.ends_with("DecodeError::")) {
                    problems.push(format!(
                        "{at}: UnsupportedVersion outside HandshakeError: {line}"
                    ));
                }
            }
            let lower = line.to_ascii_lowercase();
            let numbered_issue = lower.match_indices("issue ").any(|(i, m)| {
                lower[i + m.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            });
            if numbered_issue || lower.contains("issue's") {
                problems.push(format!("{at}: speaks of an issue: {line}"));
            }
            if line.contains("'?caps=") {
                problems.push(format!("{at}: gotalk.js adds caps itself: {line}"));
            }
        }
        // `.serve().await` runs until the server stops: in a Rust example
        // it must be the last statement.
        let mut in_rust = false;
        let mut serving_at = None;
        for (n, line) in text.lines().enumerate() {
            let code = line.trim();
            if code.starts_with("```") {
                in_rust = !in_rust && code.starts_with("```rust");
                serving_at = None;
                continue;
            }
            if !in_rust || code.is_empty() || code.starts_with("//") || code.starts_with('#') {
                continue;
            }
            if let Some(at) = serving_at {
                problems.push(format!(
                    "{name}:{at}: code after `.serve().await`, which never returns while serving"
                ));
                serving_at = None;
            }
            if code.contains(".serve().await") {
                serving_at = Some(n + 1);
            }
        }
    }
    assert!(problems.is_empty(), "stale docs:\n{}", problems.join("\n"));
}
