//! lockbridge's LDAP schema ships in three forms (`scim/lockbridge.schema` for slapd.conf,
//! `scim/lockbridge.ldif` for cn=config, `scim/lockbridge-389ds.ldif` for 389-ds): they
//! hold the same definitions, and they load into a real slapd (and, through
//! `scripts/lib/389ds-sandbox`, into the 389-ds of the scenario suite).

mod harness;

use std::collections::BTreeSet;
use std::process::Command;

use harness::repo_root;

/// The definitions of the slapd.conf form: each `attributetype` / `objectclass` block with
/// its whitespace collapsed, keyed by kind.
fn from_schema(text: &str) -> BTreeSet<(String, String)> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    for line in body.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("attributetype") {
            out.extend(current.take());
            current = Some(("attributetype".into(), rest.trim().to_owned()));
        } else if let Some(rest) = trimmed.strip_prefix("objectclass") {
            out.extend(current.take());
            current = Some(("objectclass".into(), rest.trim().to_owned()));
        } else if let Some((_, def)) = current.as_mut()
            && !trimmed.is_empty()
        {
            def.push(' ');
            def.push_str(trimmed);
        }
    }
    out.extend(current);
    out.into_iter()
        .map(|(k, d)| (k, d.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// The definitions of the cn=config form, unfolded (RFC 2849 continuation lines).
fn from_ldif(text: &str) -> BTreeSet<(String, String)> {
    let mut logical: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        match line.strip_prefix(' ') {
            Some(rest) => {
                if let Some(last) = logical.last_mut() {
                    last.push_str(rest);
                }
            }
            None => logical.push(line.to_owned()),
        }
    }
    logical
        .iter()
        .filter_map(|l| {
            let (key, value) = l.split_once(": ")?;
            let kind = match key {
                "olcAttributeTypes" | "attributeTypes" => "attributetype",
                "olcObjectClasses" | "objectClasses" => "objectclass",
                _ => return None,
            };
            Some((
                kind.to_owned(),
                value.split_whitespace().collect::<Vec<_>>().join(" "),
            ))
        })
        .collect()
}

/// Kind, OID and name of each definition.
fn names(defs: &BTreeSet<(String, String)>) -> BTreeSet<(String, String, String)> {
    defs.iter()
        .map(|(kind, d)| {
            let oid = d
                .trim_start_matches('(')
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let name = d
                .split("NAME '")
                .nth(1)
                .and_then(|r| r.split('\'').next())
                .unwrap_or_default()
                .to_owned();
            (kind.clone(), oid, name)
        })
        .collect()
}

#[test]
fn the_389ds_form_defines_the_same_names_and_oids() {
    let root = repo_root();
    let schema =
        std::fs::read_to_string(root.join("scim/lockbridge.schema")).expect("lockbridge.schema");
    let ds = std::fs::read_to_string(root.join("scim/lockbridge-389ds.ldif"))
        .expect("lockbridge-389ds.ldif");
    let mut expected = names(&from_schema(&schema));
    // 389-ds's schema lacks RFC 1274's otherMailbox (OpenLDAP has it in cosine.schema).
    expected.insert((
        "attributetype".into(),
        "0.9.2342.19200300.100.1.22".into(),
        "otherMailbox".into(),
    ));
    assert_eq!(
        names(&from_ldif(&ds)),
        expected,
        "scim/lockbridge-389ds.ldif and scim/lockbridge.schema differ"
    );
}

#[test]
fn both_forms_hold_the_same_definitions() {
    let root = repo_root();
    let schema =
        std::fs::read_to_string(root.join("scim/lockbridge.schema")).expect("lockbridge.schema");
    let ldif = std::fs::read_to_string(root.join("scim/lockbridge.ldif")).expect("lockbridge.ldif");
    let a = from_schema(&schema);
    let b = from_ldif(&ldif);
    assert!(a.len() >= 20, "{a:#?}");
    assert_eq!(
        a, b,
        "scim/lockbridge.schema and scim/lockbridge.ldif differ"
    );
    for class in [
        "lockbridgeScimUser",
        "lockbridgeScimGroup",
        "lockbridgeContact",
    ] {
        assert!(
            a.iter()
                .any(|(_, d)| d.contains(&format!("NAME '{class}'"))),
            "{class}"
        );
    }
}

#[test]
fn the_ldif_loads_into_a_cn_config_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("slapd.conf");
    std::fs::write(
        &conf,
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         database config\n",
    )
    .expect("write slapd.conf");
    let config_dir = dir.path().join("slapd.d");
    std::fs::create_dir(&config_dir).expect("mkdir");
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run an OpenLDAP tool");
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("/usr/sbin/slaptest")
        .arg("-f")
        .arg(&conf)
        .arg("-F")
        .arg(&config_dir));
    run(Command::new("/usr/sbin/slapadd")
        .args(["-n0", "-F"])
        .arg(&config_dir)
        .arg("-l")
        .arg(repo_root().join("scim/lockbridge.ldif")));
    run(Command::new("/usr/sbin/slaptest")
        .args(["-Q", "-F"])
        .arg(&config_dir));
    let schema_dir = config_dir.join("cn=config").join("cn=schema");
    let loaded: Vec<String> = std::fs::read_dir(&schema_dir)
        .expect("schema folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        loaded.iter().any(|n| n.ends_with("lockbridge.ldif")),
        "{loaded:?}"
    );
}
