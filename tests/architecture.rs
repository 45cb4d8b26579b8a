//! The layering rule as a test: a module may use only modules in rows below its own
//! (see `src/lib.rs` and docs/ARCHITECTURE.md). Features never use each other.

use std::collections::BTreeMap;
use std::path::Path;

/// Rows from the top. Modules in one row may not use each other.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["app"],
    &["http"],
    &["admin", "bulk", "scim", "selfservice", "sweep"],
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

/// The module path of a source file: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .map(|s| s.trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn identifier(text: &str) -> String {
    text.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level modules a line names: `crate::x`, each item of `crate::{x, y::z}`, and
/// `super::` paths that climb to the crate root (`super::super::x` two folders down).
fn used_modules(line: &str, module_path: &[String]) -> Vec<String> {
    let mut used = Vec::new();
    for (i, _) in line.match_indices("crate::") {
        let rest = &line[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Items at the group's top level: split on commas outside nested braces.
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        used.push(identifier(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            used.push(identifier(rest));
        }
    }
    let mut search = line;
    while let Some(i) = search.find("super::") {
        // Only the start of a path: `super::` not preceded by another `super::`.
        let before = &search[..i];
        let mut climbs = 0;
        let mut rest = &search[i..];
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        if !before.ends_with("::") {
            // A file's own items are one level up from an inline `mod tests`, so a
            // path climbing as many levels as the file is deep reaches the crate root.
            if climbs >= module_path.len() {
                used.push(identifier(rest));
            }
        }
        search = rest;
    }
    used.retain(|u| !u.is_empty());
    used
}

/// Directory methods that change a user's password or sign-in state: only `account`
/// (the one gate: rights, dialect, audit) may call them.
const DIRECTORY_WRITES: &[&str] = &[
    "set_password",
    "set_known_password",
    "set_must_change",
    "block_sign_in",
    "unblock_sign_in",
    "clear_lockout",
    "set_user_policy",
    "set_policy_max_age",
];

const FEATURES: &[&str] = &["admin", "bulk", "scim", "sweep", "http", "app", "cli"];

/// The source files of these top-level modules: (path below `src`, text).
fn files_of(modules: &[&str]) -> Vec<(std::path::PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let relative = file.strip_prefix(&src).expect("under src").to_path_buf();
            let owner = module_path(&relative).first().cloned().unwrap_or_default();
            modules.contains(&owner.as_str()).then(|| {
                let text = std::fs::read_to_string(&file).expect("read");
                (relative, text)
            })
        })
        .collect()
}

#[test]
fn features_change_accounts_only_through_account() {
    let mut violations = Vec::new();
    for (relative, text) in files_of(FEATURES) {
        // Method chains split over lines (`self\n.directory\n.set_password(`) read as one.
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("");
        for method in DIRECTORY_WRITES {
            for receiver in ["directory.", "directory()."] {
                if code.contains(&format!("{receiver}{method}(")) {
                    violations.push(format!(
                        "{}: calls Directory::{method}; go through account (AccountService)",
                        relative.display()
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// OpenLDAP's names for sign-in state: only its dialect (`directory/dialect/openldap.rs`)
/// may say them; everything else asks the dialect (`SignInVocabulary`, `account`).
const OPENLDAP_STATE_NAMES: &[&str] = &["pwdReset", "pwdAccountLockedTime", "000001010000Z"];

/// Modules whose code must not know how a directory kind keeps sign-in state.
const KIND_NEUTRAL: &[&str] = &["admin", "bulk", "scim", "sweep", "account", "selfservice"];

#[test]
fn only_the_openldap_dialect_names_openldap_state() {
    let mut violations = Vec::new();
    for (relative, text) in files_of(KIND_NEUTRAL) {
        // `tests.rs` files hold fixtures: entries as OpenLDAP returns them.
        if relative.ends_with("tests.rs") {
            continue;
        }
        // Only the code before an inline test module.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            for name in OPENLDAP_STATE_NAMES {
                if line.contains(name) {
                    violations.push(format!(
                        "{}:{}: names OpenLDAP's `{name}`; ask the directory's dialect \
                         (SignInVocabulary) or the account gate instead",
                        relative.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_scanner_sees_groups_and_super_paths() {
    let path = |p: &str| module_path(Path::new(p));
    assert_eq!(
        used_modules(
            "use crate::{audit::Action, directory::{Directory, dn_key}, policy};",
            &path("account/mod.rs")
        ),
        ["audit", "directory", "policy"]
    );
    assert_eq!(
        used_modules("use crate::sweep::engine;", &path("admin/routes.rs")),
        ["sweep"]
    );
    assert_eq!(
        used_modules("use super::super::sweep::Thing;", &path("admin/routes.rs")),
        ["sweep"]
    );
    assert!(used_modules("use super::AdminError;", &path("admin/routes.rs")).is_empty());
    assert_eq!(
        used_modules("use super::scim::X;", &path("admin/mod.rs")),
        ["scim"]
    );
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
        let module_path = module_path(relative);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for used in used_modules(line, &module_path) {
                if used == owner {
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
