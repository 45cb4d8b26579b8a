//! The layering rule as a test: a module may use only modules in rows below its own
//! (see `src/lib.rs` and docs/ARCHITECTURE.md). Features never use each other.

use std::collections::BTreeMap;
use std::path::Path;

/// Rows from the top. Modules in one row may not use each other.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["app"],
    &["http"],
    &["admin", "scim", "sweep"],
    &["account"],
    &["auth", "audit", "notify"],
    &["directory", "store"],
    &["config"],
    &["policy"],
    &["types"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_only_use_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let owner = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_string())
            .expect("a module");
        if matches!(owner.as_str(), "lib" | "main") {
            continue;
        }
        let owner_rank = rank(&owner).unwrap_or_else(|| {
            panic!(
                "module `{owner}` is not in LAYERS; place it in a layer in tests/architecture.rs"
            )
        });
        let text = std::fs::read_to_string(&file).expect("read");
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                let used: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if used == owner || used.is_empty() {
                    continue;
                }
                let Some(used_rank) = rank(&used) else {
                    continue;
                };
                if used_rank <= owner_rank {
                    violations.insert(
                        format!("{}:{}", relative.display(), n + 1),
                        format!("`{owner}` uses `{used}`, which is not in a lower layer"),
                    );
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations
            .iter()
            .map(|(at, what)| format!("  {at}: {what}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
