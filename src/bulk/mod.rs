//! Bulk jobs on many accounts at once (Microsoft 365: "reset passwords" for several
//! users, "require a password change" for everyone): the accounts are listed when the
//! job is created, then each goes through the account gate like a single request (its
//! right checked against the caller's roles, audited), a batch at a time, several in
//! flight. A job killed mid-way resumes where it stopped and resets nobody twice:
//! each new password is sealed in the store before the directory is asked, and a
//! resumed job first checks (a bind) whether it is already in force.

pub mod engine;
pub mod routes;

pub use engine::{
    BulkDeps, BulkError, JobKind, create_job, resume_running, run_job, take_report_csv,
};
