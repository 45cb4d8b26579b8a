//! A throwaway OpenLDAP slapd (mdb + ppolicy + sssvlv, verified TLS from a throwaway CA),
//! driven through `scripts/lib/slapd-sandbox`, or another directory [`Kind`] through its
//! own sandbox script ([`Slapd::start_kind`]). The state accessors (`must_change`,
//! `is_blocked`, `is_locked`, `never_expires`, `users_state`) read each kind's own
//! attributes as root, not through lockbridge.
//!
//! The directory holds `dc=example,dc=org` with the sample users alice (member of
//! `cn=admins`), bob, carol, dave and erin, all with the password in
//! [`Slapd::sample_password`], the service account lockbridge binds as (write on
//! `userPassword`, `pwdReset`, `pwdAccountLockedTime`, `pwdPolicySubentry` and, for SCIM,
//! on the entries below `ou=people` and `ou=groups`; read elsewhere; never `manage`), and
//! the default password policy `cn=default,ou=policies` (min length 8,
//! history 5, max age 90 days, must change after an admin reset, lockout after 5 failures).

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use super::{repo_root, temp_dir};

/// The directory servers a sandbox can run, each started by its own script under
/// `scripts/lib/` with the same `sandbox.env` contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// OpenLDAP slapd with the ppolicy overlay (`slapd-sandbox`).
    OpenLdap,
    /// 389 Directory Server (`389ds-sandbox`).
    Ds389,
    /// A Samba Active Directory domain controller (`samba-ad-sandbox`; needs root for
    /// its fixed ports).
    ActiveDirectory,
}

impl Kind {
    /// The value of `directory.kind` in lockbridge's configuration.
    pub fn config_name(self) -> &'static str {
        match self {
            Kind::OpenLdap => "openldap",
            Kind::Ds389 => "389ds",
            Kind::ActiveDirectory => "active-directory",
        }
    }

    /// The base DN every sandbox of this kind serves (Active Directory spells it in
    /// capitals, as it returns it).
    pub fn base_dn(self) -> &'static str {
        match self {
            Kind::OpenLdap | Kind::Ds389 => "dc=example,dc=org",
            Kind::ActiveDirectory => "DC=example,DC=org",
        }
    }

    /// The container of the sample users.
    pub fn people(self) -> String {
        format!("{}={},{}", self.rdn("ou"), "people", self.base_dn())
    }

    /// The container of the sample groups.
    pub fn groups(self) -> String {
        format!("{}={},{}", self.rdn("ou"), "groups", self.base_dn())
    }

    fn rdn(self, attr: &str) -> String {
        match self {
            Kind::ActiveDirectory => attr.to_ascii_uppercase(),
            _ => attr.to_owned(),
        }
    }

    /// The DN [`Kind::person_ldif`] gives `uid` below `parent` (Active Directory names
    /// users by cn, here the same as the account name).
    pub fn person_dn(self, uid: &str, parent: &str) -> String {
        match self {
            Kind::ActiveDirectory => format!("CN={uid},{parent}"),
            _ => format!("uid={uid},{parent}"),
        }
    }

    /// LDIF for the sandbox's `--ldif`: a person `uid` below `parent` with the sample
    /// password, changed now, shaped as the kind's own sample users.
    pub fn person_ldif(self, uid: &str, parent: &str) -> String {
        let dn = self.person_dn(uid, parent);
        match self {
            Kind::OpenLdap => format!(
                "dn: {dn}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
                 mail: {uid}@example.org\nuserPassword: @SAMPLE_PASSWORD_HASH@\n\
                 pwdChangedTime: @NOW@\n"
            ),
            Kind::Ds389 => format!(
                "dn: {dn}\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\n\
                 objectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\n\
                 mail: {uid}@example.org\nuserPassword: @SAMPLE_PASSWORD_HASH@\n\
                 pwdUpdateTime: @NOW@\npasswordExpirationTime: @EXPIRY_OF_DAYS_AGO:0@\n"
            ),
            Kind::ActiveDirectory => format!(
                "dn: {dn}\nobjectClass: user\nsAMAccountName: {uid}\n\
                 userPrincipalName: {uid}@example.org\nsn: {uid}\ndisplayName: {uid}\n\
                 mail: {uid}@example.org\nuserAccountControl: 512\n\
                 unicodePwd:: @SAMPLE_UNICODEPWD_B64@\n"
            ),
        }
    }

    /// LDIF for a group `cn` in [`Kind::groups`] with `members` (DNs).
    pub fn group_ldif(self, cn: &str, members: &[String]) -> String {
        let mut out = match self {
            Kind::ActiveDirectory => format!(
                "dn: CN={cn},{}\nobjectClass: group\nsAMAccountName: {cn}\n",
                self.groups()
            ),
            _ => format!(
                "dn: cn={cn},{}\nobjectClass: groupOfNames\ncn: {cn}\n",
                self.groups()
            ),
        };
        for m in members {
            out.push_str(&format!("member: {m}\n"));
        }
        out
    }

    /// LDIF for an organizational unit `name` below `parent`.
    pub fn ou_ldif(self, name: &str, parent: &str) -> String {
        let ou = self.rdn("ou");
        format!("dn: {ou}={name},{parent}\nobjectClass: organizationalUnit\nou: {name}\n")
    }

    fn script(self) -> PathBuf {
        repo_root().join(match self {
            Kind::OpenLdap => "scripts/lib/slapd-sandbox",
            Kind::Ds389 => "scripts/lib/389ds-sandbox",
            Kind::ActiveDirectory => "scripts/lib/samba-ad-sandbox",
        })
    }
}

/// A running throwaway directory server (slapd unless [`Slapd::start_kind`] said
/// otherwise). Stopped and removed on drop.
pub struct Slapd {
    /// Which server this is.
    pub kind: Kind,
    /// The sandbox state folder (config, database, `slapd.log`, `sandbox.env`).
    pub dir: PathBuf,
    /// `ldap://127.0.0.1:PORT` (plain; StartTLS works too).
    pub ldap_url: String,
    /// `ldaps://127.0.0.1:PORT` (certificate for `localhost` and `127.0.0.1`).
    pub ldaps_url: String,
    /// `ldapi://...` socket inside `dir`.
    pub ldapi_url: String,
    /// PEM file of the throwaway CA that signed the server certificate.
    pub ca_file: PathBuf,
    pub base_dn: String,
    pub users_base: String,
    pub groups_base: String,
    pub admin_group_dn: String,
    pub root_dn: String,
    pub root_password: String,
    pub service_dn: String,
    pub service_password: String,
    /// File holding the service password (mode 600, no trailing newline).
    pub service_password_file: PathBuf,
    /// Initial password of every sample and generated user.
    pub sample_password: String,
    pub root_password_file: PathBuf,
    /// The server's log.
    pub log_file: PathBuf,
    running: bool,
    temp: Option<TempDir>,
}

impl fmt::Debug for Slapd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slapd")
            .field("dir", &self.dir)
            .field("ldaps_url", &self.ldaps_url)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// What `ldapwhoami -e ppolicy` reported for a simple bind.
#[derive(Debug, Clone)]
pub struct BindOutcome {
    /// The bind succeeded (it may still carry a "must change" warning).
    pub success: bool,
    /// The ppolicy response said the password must be changed (after an admin reset)
    /// or has expired.
    pub must_change: bool,
    /// The ppolicy response said the account is locked.
    pub locked: bool,
    /// Everything ldapwhoami printed (stdout and stderr). Never contains the password.
    pub output: String,
}

impl Slapd {
    /// Starts a sandbox with the sample users only.
    pub fn start() -> Slapd {
        Slapd::start_with(0, &[])
    }

    /// Starts a sandbox with `users` extra generated users (`user000001`, ...) and extra
    /// LDIF loaded with slapadd before start. The LDIF text may use the placeholders
    /// `@SAMPLE_PASSWORD_HASH@`, `@NOW@` and `@DAYS_AGO:N@` (e.g. to backdate
    /// `pwdChangedTime`).
    pub fn start_with(users: usize, extra_ldif: &[&str]) -> Slapd {
        Slapd::start_sandbox(users, extra_ldif, &[])
    }

    /// Starts a sandbox whose service account has these slapd `limits` (e.g. "size=2")
    /// instead of none.
    pub fn start_with_service_limits(limits: &str) -> Slapd {
        Slapd::start_sandbox(0, &[], &["--service-limits", limits])
    }

    /// Starts a sandbox without the memberof overlay: members carry no `memberOf`, as in
    /// a directory that does not keep it.
    pub fn start_without_memberof() -> Slapd {
        Slapd::start_sandbox(0, &[], &["--without-memberof"])
    }

    /// Starts a sandbox of `kind` with `users` generated users. Extra LDIF is the
    /// kind's own (each script documents its placeholders).
    pub fn start_kind(kind: Kind, users: usize, extra_ldif: &[&str]) -> Slapd {
        Slapd::start_sandbox_of(kind, users, extra_ldif, &[])
    }

    fn start_sandbox(users: usize, extra_ldif: &[&str], options: &[&str]) -> Slapd {
        Slapd::start_sandbox_of(Kind::OpenLdap, users, extra_ldif, options)
    }

    fn start_sandbox_of(kind: Kind, users: usize, extra_ldif: &[&str], options: &[&str]) -> Slapd {
        let temp = temp_dir("lb-slapd-");
        let dir = temp.path().join("ldap");
        let mut cmd = Command::new(kind.script());
        cmd.arg("start")
            .arg(&dir)
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .args(options);
        if users > 0 {
            cmd.arg("--users").arg(users.to_string());
        }
        for (i, ldif) in extra_ldif.iter().enumerate() {
            let path = temp.path().join(format!("extra-{i}.ldif"));
            std::fs::write(&path, ldif).expect("write extra LDIF");
            cmd.arg("--ldif").arg(path);
        }
        let out = run(&mut cmd);
        if !out.status.success() {
            panic!(
                "{} start failed ({}):\n{}",
                kind.script().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let env = read_env(&dir.join("sandbox.env"));
        let get = |key: &str| -> String {
            env.get(key)
                .unwrap_or_else(|| panic!("sandbox.env lacks {key}"))
                .clone()
        };
        Slapd {
            kind,
            ldap_url: get("LDAP_URL"),
            ldaps_url: get("LDAPS_URL"),
            ldapi_url: env.get("LDAPI_URL").cloned().unwrap_or_default(),
            ca_file: PathBuf::from(get("LDAP_CA_FILE")),
            base_dn: get("LDAP_BASE_DN"),
            users_base: get("LDAP_USERS_BASE"),
            groups_base: get("LDAP_GROUPS_BASE"),
            admin_group_dn: get("LDAP_ADMIN_GROUP_DN"),
            root_dn: get("LDAP_ROOT_DN"),
            root_password: get("LDAP_ROOT_PASSWORD"),
            service_dn: get("LDAP_SERVICE_DN"),
            service_password: get("LDAP_SERVICE_PASSWORD"),
            service_password_file: dir.join("service-password"),
            sample_password: get("LDAP_SAMPLE_PASSWORD"),
            root_password_file: dir.join("root-password"),
            log_file: ["SLAPD_LOG_FILE", "DS_LOG_FILE", "SAMBA_LOG_FILE"]
                .iter()
                .find_map(|k| env.get(*k))
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("slapd.log")),
            dir,
            running: true,
            temp: Some(temp),
        }
    }

    /// The DN of a user under `users_base`, e.g. `user_dn("bob")` (Active Directory
    /// names users by cn: looked up by sAMAccountName).
    pub fn user_dn(&self, uid: &str) -> String {
        if self.kind != Kind::ActiveDirectory {
            return format!("uid={uid},{}", self.users_base);
        }
        let out = self.ldap_tool("ldapsearch", |cmd| {
            self.as_root(cmd)
                .args(["-LLL", "-o", "ldif-wrap=no", "-b"])
                .arg(&self.users_base)
                .arg(format!("(sAMAccountName={uid})"))
                .arg("1.1");
        });
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let dn = parse_attr_values(&text, "dn");
        assert_eq!(
            dn.len(),
            1,
            "one user {uid} under {}: {text}",
            self.users_base
        );
        dn[0].clone()
    }

    /// `[directory]` keys this kind needs in lockbridge's configuration beyond the
    /// sandbox's URLs and DNs.
    pub fn directory_settings(&self) -> &'static str {
        match self.kind {
            Kind::OpenLdap | Kind::Ds389 => "",
            Kind::ActiveDirectory => {
                "user_filter = \"(&(objectCategory=person)(objectClass=user))\"\n\
                 user_name_attribute = \"sAMAccountName\"\n\
                 display_name_attribute = \"displayName\"\n"
            }
        }
    }

    /// The server's log (slapd: stats level), handy in assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops slapd (SIGTERM, waits until it is gone). The data stays.
    pub fn stop(&mut self) {
        let out = run(Command::new(self.kind.script()).arg("stop").arg(&self.dir));
        if !out.status.success() {
            panic!(
                "slapd-sandbox stop failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = false;
    }

    /// Starts slapd again on the same ports with the same data (stopping it first if it
    /// is still running). Returns once a bind works.
    pub fn start_again(&mut self) {
        let out = run(Command::new(self.kind.script())
            .arg("restart")
            .arg(&self.dir));
        if !out.status.success() {
            panic!(
                "slapd-sandbox restart failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.running = true;
    }

    /// A simple bind over LDAPS with the ppolicy request control (`ldapwhoami -e ppolicy`;
    /// Active Directory has no Who-am-I, so there a base search of the root DSE, and the
    /// bind's own diagnostic says why it failed: `data 773` must change, `775` locked).
    pub fn bind_as(&self, dn: &str, password: &str) -> BindOutcome {
        let pw_file = self.secret_file(password);
        if self.kind == Kind::ActiveDirectory {
            let out = self.ldap_tool("ldapsearch", |cmd| {
                cmd.arg("-H")
                    .arg(&self.ldaps_url)
                    .arg("-x")
                    .arg("-D")
                    .arg(dn)
                    .arg("-y")
                    .arg(pw_file.path())
                    .args(["-s", "base", "-b", "", "(objectClass=*)", "1.1"]);
            });
            let output = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let must_change = output.contains("data 773");
            return BindOutcome {
                // The password was right; the account must change it first.
                success: out.status.success() || must_change,
                must_change,
                locked: output.contains("data 775"),
                output,
            };
        }
        let out = self.ldap_tool("ldapwhoami", |cmd| {
            cmd.arg("-H")
                .arg(&self.ldaps_url)
                .arg("-x")
                .arg("-D")
                .arg(dn)
                .arg("-y")
                .arg(pw_file.path())
                .arg("-e")
                .arg("ppolicy");
        });
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        BindOutcome {
            // 389-ds accepts a bind whose password must change, then refuses the
            // Who-am-I (53): the bind itself succeeded.
            success: out.status.success() || output.contains("ldap_bind: Success (0)"),
            must_change: output.contains("Password must be changed")
                || output.contains("Password expired"),
            locked: output.contains("Account locked"),
            output,
        }
    }

    /// Values of one attribute of one entry, read as the root DN (so operational
    /// attributes such as `pwdReset`, `pwdChangedTime`, `pwdAccountLockedTime` and
    /// `pwdHistory` are visible). Empty when the entry lacks the attribute; panics when
    /// the entry does not exist.
    pub fn ldapsearch_attr(&self, dn: &str, attr: &str) -> Vec<String> {
        let out = self.ldap_tool("ldapsearch", |cmd| {
            self.as_root(cmd)
                .args(["-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b"])
                .arg(dn)
                .arg("(objectClass=*)")
                .arg(attr);
        });
        if !out.status.success() {
            panic!(
                "ldapsearch of {attr} on {dn} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse_attr_values(&String::from_utf8_lossy(&out.stdout), attr)
    }

    /// The entry's values of `attrs` as root sees them, one `name: value` line each in
    /// the directory's order (for comparing an entry before and after).
    pub fn ldapsearch_attrs(&self, dn: &str, attrs: &[&str]) -> String {
        let out = self.ldap_tool("ldapsearch", |cmd| {
            self.as_root(cmd)
                .args(["-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b"])
                .arg(dn)
                .arg("(objectClass=*)")
                .args(attrs);
        });
        if !out.status.success() {
            panic!(
                "ldapsearch of {attrs:?} on {dn} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("dn:"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Makes `dn`'s password look `days` days old to the directory's expiry, the way
    /// each kind allows it.
    pub fn backdate_password(&self, dn: &str, days: i64) {
        let at = (chrono::Utc::now() - chrono::Duration::days(days))
            .format("%Y%m%d%H%M%SZ")
            .to_string();
        match self.kind {
            Kind::OpenLdap => self.ldapmodify_as_root_relax(&format!(
                "dn: {dn}\nchangetype: modify\nreplace: pwdChangedTime\npwdChangedTime: {at}\n"
            )),
            // 389-ds decides expiry from passwordExpirationTime alone (set at each
            // change from the policy's maximum age: 90 days in the sandbox); lockbridge
            // reads when the password changed from pwdUpdateTime. Both move back.
            Kind::Ds389 => {
                let expires = (chrono::Utc::now() + chrono::Duration::days(90 - days))
                    .format("%Y%m%d%H%M%SZ")
                    .to_string();
                self.ldapmodify_as_root(&format!(
                    "dn: {dn}\nchangetype: modify\nreplace: pwdUpdateTime\npwdUpdateTime: {at}\n-\n\
                     replace: passwordExpirationTime\npasswordExpirationTime: {expires}\n"
                ))
            }
            // pwdLastSet only takes 0 or -1 over LDAP: the sandbox writes it to the
            // stopped domain controller's database and starts it again.
            Kind::ActiveDirectory => {
                let ldif = self.dir.join(".backdate.ldif");
                std::fs::write(
                    &ldif,
                    format!(
                        "dn: {dn}\nchangetype: modify\nreplace: pwdLastSet\npwdLastSet: @DAYS_AGO:{days}@\n"
                    ),
                )
                .expect("write the backdating LDIF");
                let out = run(Command::new(self.kind.script())
                    .arg("apply-ldif")
                    .arg(&self.dir)
                    .arg(&ldif));
                assert!(
                    out.status.success(),
                    "samba-ad-sandbox apply-ldif failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    /// Sets the minimum password length of the directory's default policy (the
    /// sandboxes start with 8).
    pub fn set_min_password_length(&self, length: u32) {
        match self.kind {
            Kind::OpenLdap => self.ldapmodify_as_root(&format!(
                "dn: cn=default,ou=policies,{}\nchangetype: modify\nreplace: pwdMinLength\npwdMinLength: {length}\n",
                self.base_dn
            )),
            Kind::Ds389 => self.ldapmodify_as_root(&format!(
                "dn: cn=config\nchangetype: modify\nreplace: passwordMinLength\npasswordMinLength: {length}\n"
            )),
            Kind::ActiveDirectory => self.ldapmodify_as_root(&format!(
                "dn: {}\nchangetype: modify\nreplace: minPwdLength\nminPwdLength: {length}\n",
                self.base_dn
            )),
        }
    }

    /// The `[expiry]` section (and, for Active Directory, the `[scim]` section) that
    /// `scripts/demo` writes for this kind: where the default policy is, and how "never
    /// expires" is kept.
    pub fn demo_settings(&self) -> String {
        let mut out = format!(
            "\n[expiry]\nsource = \"directory\"\ndefault_policy_dn = \"{}\"\n",
            self.default_policy_dn()
        );
        if let Some(dn) = self.never_expires_policy_dn() {
            out.push_str(&format!("never_expires_policy_dn = \"{dn}\"\n"));
        }
        if self.kind == Kind::ActiveDirectory {
            out.push_str(
                "\n[scim]\nuser_object_classes = [\"user\"]\ngroup_object_classes = [\"group\"]\n\
                 external_id_attribute = \"adminDescription\"\n\
                 group_external_id_attribute = \"adminDescription\"\n",
            );
        }
        out
    }

    /// Where the kind keeps the default password policy: a ppolicy entry, 389-ds's
    /// global policy in `cn=config`, Active Directory's domain object.
    pub fn default_policy_dn(&self) -> String {
        match self.kind {
            Kind::OpenLdap => format!("cn=default,ou=policies,{}", self.base_dn),
            Kind::Ds389 => "cn=config".into(),
            Kind::ActiveDirectory => self.base_dn.clone(),
        }
    }

    /// The policy whose passwords never expire; `None` where "never expires" is a flag
    /// on the account (Active Directory).
    pub fn never_expires_policy_dn(&self) -> Option<String> {
        match self.kind {
            Kind::OpenLdap | Kind::Ds389 => {
                Some(format!("cn=never-expires,ou=policies,{}", self.base_dn))
            }
            Kind::ActiveDirectory => None,
        }
    }

    /// The attributes in which this kind keeps a user's password and sign-in state, as
    /// lockbridge writes them: reading them before and after an action tells whether it
    /// changed anything. (Active Directory does not give out `unicodePwd`; `pwdLastSet`
    /// moves with every password write.)
    pub fn state_attributes(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::OpenLdap => &[
                "userPassword",
                "pwdReset",
                "pwdAccountLockedTime",
                "pwdPolicySubentry",
            ],
            Kind::Ds389 => &[
                "userPassword",
                "passwordExpirationTime",
                "nsAccountLock",
                "accountUnlockTime",
                "pwdpolicysubentry",
            ],
            Kind::ActiveDirectory => &["pwdLastSet", "userAccountControl", "lockoutTime"],
        }
    }

    /// `dn`'s password and sign-in state (see [`Slapd::state_attributes`]) as root reads
    /// it, for comparing before and after.
    pub fn sign_in_state(&self, dn: &str) -> String {
        self.ldapsearch_attrs(dn, self.state_attributes())
    }

    /// Whether the directory will ask `dn` to change the password at the next sign-in,
    /// read from the server's own state: ppolicy's `pwdReset`, 389-ds's expiry time of
    /// 1970 (its `pwdReset` is not consulted by its binds, and no client may clear it),
    /// Active Directory's `pwdLastSet` of 0.
    pub fn must_change(&self, dn: &str) -> bool {
        let attrs = self.read_state(dn);
        state_of(self.kind, &attrs, self.never_expires_policy_dn().as_deref()).must_change
    }

    /// Whether sign-in is blocked by an administrator (not a lockout): ppolicy's
    /// `pwdAccountLockedTime` of `000001010000Z`, 389-ds's `nsAccountLock`, Active
    /// Directory's ACCOUNTDISABLE.
    pub fn is_blocked(&self, dn: &str) -> bool {
        let attrs = self.read_state(dn);
        state_of(self.kind, &attrs, self.never_expires_policy_dn().as_deref()).blocked
    }

    /// Whether `dn` is locked out after failed binds (a block is not a lockout).
    pub fn is_locked(&self, dn: &str) -> bool {
        let attrs = self.read_state(dn);
        state_of(self.kind, &attrs, self.never_expires_policy_dn().as_deref()).locked
    }

    /// Whether `dn`'s password never expires: under the never-expires policy, or Active
    /// Directory's DONT_EXPIRE_PASSWORD.
    pub fn never_expires(&self, dn: &str) -> bool {
        let attrs = self.read_state(dn);
        state_of(self.kind, &attrs, self.never_expires_policy_dn().as_deref()).never_expires
    }

    /// Locks `dn` out the way the server does it: wrong passwords until the sandboxes'
    /// policy (5 failures) locks the account.
    pub fn lock_out(&self, dn: &str) {
        for _ in 0..5 {
            let bind = self.bind_as(dn, "Wrong-password-1");
            assert!(!bind.success, "a wrong password binds: {}", bind.output);
        }
        assert!(self.is_locked(dn), "five failures lock {dn} out");
    }

    /// Every user below `users_base`, by account name, with the state each kind keeps
    /// (one paged search).
    pub fn users_state(&self) -> HashMap<String, UserState> {
        let (filter, name) = match self.kind {
            Kind::ActiveDirectory => ("(sAMAccountName=*)", "sAMAccountName"),
            _ => ("(uid=*)", "uid"),
        };
        let out = self.ldap_tool("ldapsearch", |cmd| {
            self.as_root(cmd)
                .args(["-LLL", "-o", "ldif-wrap=no", "-E", "pr=1000/noprompt", "-b"])
                .arg(&self.users_base)
                .arg(filter)
                .arg(name)
                .args(STATE_READ[kind_index(self.kind)]);
        });
        assert!(
            out.status.success(),
            "ldapsearch of the users failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let never = self.never_expires_policy_dn();
        parse_entries(&out.stdout)
            .into_iter()
            .filter_map(|attrs| {
                let uid = attrs.get(&name.to_ascii_lowercase())?.first()?;
                let uid = String::from_utf8_lossy(uid).into_owned();
                Some((uid, state_of(self.kind, &attrs, never.as_deref())))
            })
            .collect()
    }

    fn read_state(&self, dn: &str) -> HashMap<String, Vec<Vec<u8>>> {
        let out = self.ldap_tool("ldapsearch", |cmd| {
            self.as_root(cmd)
                .args(["-LLL", "-o", "ldif-wrap=no", "-s", "base", "-b"])
                .arg(dn)
                .arg("(objectClass=*)")
                .args(STATE_READ[kind_index(self.kind)]);
        });
        assert!(
            out.status.success(),
            "ldapsearch of {dn}'s state failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_entries(&out.stdout)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no entry {dn}"))
    }

    /// Applies LDIF (with `changetype:` lines) as the root DN; panics on failure.
    pub fn ldapmodify_as_root(&self, ldif: &str) {
        self.ldapmodify_root(ldif, false);
    }

    /// Like [`Slapd::ldapmodify_as_root`] but with the Relax Rules control, which lets
    /// the root DN write operational attributes such as `pwdChangedTime`
    /// (`replace: pwdChangedTime` / `pwdChangedTime: 20200101000000Z`).
    pub fn ldapmodify_as_root_relax(&self, ldif: &str) {
        self.ldapmodify_root(ldif, true);
    }

    fn ldapmodify_root(&self, ldif: &str, relax: bool) {
        let mut cmd = Command::new(tool("ldapmodify"));
        self.tls_env(&mut cmd);
        self.as_root(&mut cmd);
        if relax {
            cmd.args(["-e", "relax"]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ldapmodify");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write LDIF to ldapmodify");
        let out = child.wait_with_output().expect("wait for ldapmodify");
        if !out.status.success() {
            panic!(
                "ldapmodify as root failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn as_root<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.arg("-H")
            .arg(&self.ldaps_url)
            .arg("-x")
            .arg("-D")
            .arg(&self.root_dn)
            .arg("-y")
            .arg(&self.root_password_file)
    }

    fn tls_env(&self, cmd: &mut Command) {
        cmd.env("LDAPTLS_CACERT", &self.ca_file)
            .env("LDAPTLS_REQCERT", "demand")
            .env_remove("LDAPRC")
            .env_remove("LDAPCONF");
    }

    fn ldap_tool(&self, name: &str, args: impl FnOnce(&mut Command)) -> Output {
        let mut cmd = Command::new(tool(name));
        self.tls_env(&mut cmd);
        args(&mut cmd);
        run(&mut cmd)
    }

    /// A mode-600 file holding a secret for an LDAP tool's `-y`, removed on drop.
    fn secret_file(&self, secret: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new()
            .prefix(".pw-")
            .tempfile_in(&self.dir)
            .expect("create a password file");
        file.write_all(secret.as_bytes())
            .expect("write a password file");
        file
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if self.running {
            let mut stop = Command::new(self.kind.script());
            stop.arg("stop").arg(&self.dir);
            if self.kind == Kind::Ds389 {
                // The data goes with the folder: no clean shutdown (2 s) to wait for.
                stop.arg("--now");
            }
            let _ = run(&mut stop);
        }
        drop(self.temp.take());
    }
}

/// LDAP tools live in /usr/sbin (slapd) or /usr/bin (ldap-utils); PATH may lack sbin.
fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    PathBuf::from(name)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn read_env(path: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

/// Values of `attr` in `ldapsearch -LLL -o ldif-wrap=no` output (`attr: v` or `attr:: b64`).
fn parse_attr_values(ldif: &str, attr: &str) -> Vec<String> {
    let mut values = Vec::new();
    for line in ldif.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let base_name = name.split(';').next().unwrap_or(name);
        if !base_name.eq_ignore_ascii_case(attr) {
            continue;
        }
        if let Some(b64) = rest.strip_prefix(':') {
            let bytes = base64_decode(b64.trim());
            values.push(String::from_utf8_lossy(&bytes).into_owned());
        } else {
            values.push(rest.strip_prefix(' ').unwrap_or(rest).to_string());
        }
    }
    values
}

fn base64_decode(input: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in input.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue; // padding or white space
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A user's sign-in state as the directory keeps it (see [`Slapd::users_state`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub must_change: bool,
    pub blocked: bool,
    /// Locked out after failed binds (a block is not a lockout).
    pub locked: bool,
    pub never_expires: bool,
    /// A count that rises by one with each write of the password: the password history's
    /// length on OpenLDAP and 389-ds (sandbox users start without one), the version of
    /// `unicodePwd` in Active Directory's replication metadata (which counts its creation
    /// too). Compare it before and after, within one kind.
    pub password_writes: usize,
}

/// The attributes each kind's state is read from (operational ones by name).
const STATE_READ: [&[&str]; 3] = [
    &[
        "pwdReset",
        "pwdAccountLockedTime",
        "pwdPolicySubentry",
        "pwdHistory",
    ],
    &[
        "passwordExpirationTime",
        "nsAccountLock",
        "accountUnlockTime",
        "pwdpolicysubentry",
        "passwordHistory",
    ],
    &[
        "pwdLastSet",
        "userAccountControl",
        "lockoutTime",
        "replPropertyMetaData",
    ],
];

fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::OpenLdap => 0,
        Kind::Ds389 => 1,
        Kind::ActiveDirectory => 2,
    }
}

/// ppolicy's `pwdAccountLockedTime` for a lock by an administrator (no end).
const PPOLICY_BLOCKED: &str = "000001010000Z";
/// 389-ds's `passwordExpirationTime` that asks for a change at the next bind.
const DS389_MUST_CHANGE: &str = "19700101000000Z";
/// Active Directory's `userAccountControl` bits.
const AD_ACCOUNTDISABLE: u64 = 0x2;
const AD_DONT_EXPIRE_PASSWORD: u64 = 0x10000;
/// `unicodePwd`'s attribute id in Active Directory's replication metadata.
const AD_UNICODE_PWD_ATTID: u32 = 0x0009_005a;

fn state_of(
    kind: Kind,
    attrs: &HashMap<String, Vec<Vec<u8>>>,
    never_expires_dn: Option<&str>,
) -> UserState {
    let first = |name: &str| -> Option<String> {
        attrs
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
    };
    let count = |name: &str| attrs.get(&name.to_ascii_lowercase()).map_or(0, Vec::len);
    let under_never_expires = |attr: &str| {
        first(attr)
            .zip(never_expires_dn)
            .is_some_and(|(v, dn)| v.eq_ignore_ascii_case(dn))
    };
    match kind {
        Kind::OpenLdap => {
            let locked_time = first("pwdAccountLockedTime");
            UserState {
                must_change: first("pwdReset").is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
                blocked: locked_time.as_deref() == Some(PPOLICY_BLOCKED),
                locked: locked_time.is_some_and(|t| t != PPOLICY_BLOCKED),
                never_expires: under_never_expires("pwdPolicySubentry"),
                password_writes: count("pwdHistory"),
            }
        }
        Kind::Ds389 => {
            let now = chrono::Utc::now().format("%Y%m%d%H%M%SZ").to_string();
            UserState {
                must_change: first("passwordExpirationTime").as_deref() == Some(DS389_MUST_CHANGE),
                blocked: first("nsAccountLock").is_some_and(|v| v.eq_ignore_ascii_case("true")),
                // Until accountUnlockTime (1970: until an administrator unlocks). Both are
                // GeneralizedTime in UTC, so they compare as text.
                locked: first("accountUnlockTime")
                    .is_some_and(|t| t == DS389_MUST_CHANGE || t > now),
                never_expires: under_never_expires("pwdpolicysubentry"),
                password_writes: count("passwordHistory"),
            }
        }
        Kind::ActiveDirectory => {
            let control: u64 = first("userAccountControl")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            UserState {
                must_change: first("pwdLastSet").as_deref() == Some("0"),
                blocked: control & AD_ACCOUNTDISABLE != 0,
                // lockoutTime stays set after the lockout ran out until the next good
                // bind; the sandbox's lockout lasts five minutes, longer than any test.
                locked: first("lockoutTime").is_some_and(|t| t != "0"),
                never_expires: control & AD_DONT_EXPIRE_PASSWORD != 0,
                password_writes: attrs
                    .get("replpropertymetadata")
                    .and_then(|v| v.first())
                    .and_then(|blob| attribute_version(blob, AD_UNICODE_PWD_ATTID))
                    .unwrap_or(0) as usize,
            }
        }
    }
}

/// The version of one attribute in a `replPropertyMetaDataBlob` (version 1: a 16-byte
/// header whose third word is the count, then 48-byte entries starting with the
/// attribute id and its version).
fn attribute_version(blob: &[u8], attid: u32) -> Option<u32> {
    let word = |at: usize| -> Option<u32> {
        blob.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = word(8)? as usize;
    (0..count).find_map(|i| {
        let at = 16 + 48 * i;
        (word(at)? == attid).then(|| word(at + 4)).flatten()
    })
}

/// The entries of `ldapsearch -LLL -o ldif-wrap=no` output: attribute names in lower
/// case (options dropped), values as bytes (`attr:: b64` decoded).
fn parse_entries(ldif: &[u8]) -> Vec<HashMap<String, Vec<Vec<u8>>>> {
    let text = String::from_utf8_lossy(ldif);
    let mut entries = Vec::new();
    let mut current: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for line in text.lines().chain([""]) {
        if line.is_empty() {
            if !current.is_empty() {
                entries.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.split(';').next().unwrap_or(name).to_ascii_lowercase();
        let value = match rest.strip_prefix(':') {
            Some(b64) => base64_decode(b64.trim()),
            None => rest.strip_prefix(' ').unwrap_or(rest).as_bytes().to_vec(),
        };
        current.entry(name).or_default().push(value);
    }
    entries
}
