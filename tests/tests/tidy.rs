//! Invariants of the workspace that a test can check: the dependency direction between our
//! crates, no oversized source file, and every fixture documented beside the script that made it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Our crates each crate may depend on (normal dependencies; dev-dependencies are free).
const ALLOWED: &[(&str, &[&str])] = &[
    ("kernels", &[]),
    ("runtime", &["nexus-kernels"]),
    ("convert", &["nexus-kernels", "nexus-runtime"]),
    ("train", &["nexus-kernels", "nexus-runtime"]),
    ("cli", &["nexus-kernels", "nexus-runtime", "nexus-convert", "nexus-train"]),
    ("benches", &["nexus-kernels", "nexus-runtime"]),
    ("tests", &["nexus-kernels", "nexus-runtime", "nexus-convert", "nexus-train"]),
];

/// Names of `nexus-*` crates listed in the `[dependencies]` table (and target-specific ones).
fn our_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]" || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
            continue;
        }
        if in_deps {
            if let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| n.starts_with("nexus-")) {
                deps.insert(name.to_string());
            }
        }
    }
    deps
}

#[test]
fn dependencies_point_one_way() {
    let workspace = fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for (krate, allowed) in ALLOWED {
        assert!(workspace.contains(&format!("\"{krate}\"")), "{krate} missing from the workspace members");
        let manifest = fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        for dep in our_dependencies(&manifest) {
            assert!(allowed.contains(&dep.as_str()), "{krate} must not depend on {dep} (kernels ← runtime ← convert, train ← cli)");
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.is_dir() {
            if name != "target" && !name.starts_with('.') && name != "fixtures" {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// Generated lookup tables are data, not code a reader must follow.
const GENERATED: &[&str] = &["unicode_data.rs"];
const MAX_LINES: usize = 800;

#[test]
fn no_source_file_is_a_monolith() {
    let mut files = Vec::new();
    for krate in ["kernels", "runtime", "convert", "train", "cli", "benches", "tests"] {
        rust_files(&root().join(krate), &mut files);
    }
    assert!(files.len() > 10, "found only {} source files: wrong root?", files.len());
    let too_long: Vec<String> = files
        .iter()
        .filter(|p| !GENERATED.iter().any(|g| p.ends_with(g)))
        .filter_map(|p| {
            let n = fs::read_to_string(p).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", p.strip_prefix(root()).unwrap().display()))
        })
        .collect();
    assert!(too_long.is_empty(), "split these files (one module per concern, ≤ {MAX_LINES} lines): {too_long:?}");
}

/// Each folder of fixtures has a README.md that names every file in it and at least one
/// script under scripts/ that exists.
#[test]
fn every_fixture_is_documented_with_its_script() {
    let fixtures = root().join("tests/fixtures");
    let mut checked = 0;
    for dir in fs::read_dir(&fixtures).unwrap().flatten().map(|e| e.path()).filter(|p| p.is_dir()) {
        let readme_path = dir.join("README.md");
        let readme = fs::read_to_string(&readme_path)
            .unwrap_or_else(|_| panic!("{} has no README.md naming its files and script", dir.display()));
        let scripts: Vec<&str> = readme
            .split(|c: char| c.is_whitespace() || "`()[]<>,;:\"'".contains(c))
            .filter(|w| w.starts_with("scripts/"))
            .collect();
        assert!(!scripts.is_empty(), "{} names no scripts/… generator", readme_path.display());
        for s in &scripts {
            let s = s.trim_end_matches('.');
            assert!(root().join(s).exists(), "{} names {s}, which does not exist", readme_path.display());
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for f in fs::read_dir(&d).unwrap().flatten().map(|e| e.path()) {
                if f.is_dir() {
                    stack.push(f);
                    continue;
                }
                let name = f.file_name().unwrap().to_string_lossy().to_string();
                if name == "README.md" {
                    continue;
                }
                // A README may name a family of files by a `*.suffix` pattern.
                let by_pattern = readme
                    .split(|c: char| c.is_whitespace() || "`()[],;:\"'".contains(c))
                    .filter_map(|w| w.strip_prefix('*'))
                    .any(|suffix| suffix.len() > 1 && name.ends_with(suffix));
                assert!(readme.contains(&name) || by_pattern, "{} does not mention fixture {name}", readme_path.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}
