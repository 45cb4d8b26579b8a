//! The OpenAPI document served at `/api/v1/openapi.json`, generated from the handlers.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::admin::routes as admin;
use crate::bulk::routes as bulk;
use crate::sweep::routes as sweeps;

#[derive(OpenApi)]
#[openapi(
    info(title = "lockbridge admin API", description = "Password management over LDAP: user lookup, password resets, audit log."),
    paths(admin::list_users, admin::get_user, admin::reset_password,
        admin::sign_in, admin::sign_out, admin::put_require_password_change, admin::unlock, admin::block, admin::unblock, admin::list_audit,
        admin::get_expiration_policy, admin::list_dead_letters, admin::put_expiration_policy, admin::put_never_expires,
        admin::list_reset_requests, admin::dismiss_reset_request,
        bulk::start_password_resets, bulk::start_change_requirements, bulk::get_job,
        bulk::job_outcomes, bulk::job_report,
        sweeps::start_sweep, sweeps::get_sweep, sweeps::list_sweeps, super::health::readiness_details),
    components(schemas(admin::UserView, admin::UserPage, admin::ResetBody, admin::ResetMode,
        admin::ResetResponse, admin::AuditPage, admin::AuditRecordView, super::ErrorBody,
        admin::ExpirationPolicyView, admin::DeadLetterPage, admin::DeadLetterView, admin::NeverExpiresBody, admin::SignInBody, admin::SessionView,
        admin::RequirePasswordChangeBody, admin::SignInChangeView,
        admin::ResetRequestView, admin::ResetRequestPage, admin::DismissBody, sweeps::StartSweep, bulk::BulkResetBody, bulk::ChangeRequirementBody,
        bulk::Selection, bulk::JobStarted, bulk::JobView, bulk::OutcomeView, bulk::OutcomePage, sweeps::SweepStarted,
        super::health::ReadinessView)),
    modifiers(&BearerAuth),
    tags((name = "users"), (name = "passwords"), (name = "audit"), (name = "policy"), (name = "sweeps"), (name = "sessions"), (name = "operations"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = doc.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}
