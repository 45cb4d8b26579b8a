//! Self-service rows: flows in progress, "contact an administrator" requests and
//! first-password links, on PostgreSQL. The [`Store`](crate::store::Store) impl delegates
//! here.

use chrono::{DateTime, Utc};

use super::{PostgresStore, err, from_json, to_json_text};
use crate::store::{
    FlowRecord, MAX_PAGE, NewFlow, NewResetRequest, NewWelcomeLink, ResetRequestRecord, StoreError,
    WelcomeLinkRecord,
};

type RequestRow = (
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
);

/// id, purpose, state (JSON text), version, created_at, expires_at.
type FlowRow = (String, String, String, i64, DateTime<Utc>, DateTime<Utc>);

macro_rules! request_columns {
    () => {
        "id, user_dn, user_name, status, created_at, closed_at, closed_by, reason"
    };
}

fn request(row: RequestRow) -> ResetRequestRecord {
    let (id, user_dn, user_name, status, created_at, closed_at, closed_by, reason) = row;
    ResetRequestRecord {
        id,
        user_dn,
        user_name,
        status,
        created_at,
        closed_at,
        closed_by,
        reason,
    }
}

impl PostgresStore {
    pub(super) async fn flow_insert(
        &self,
        f: &NewFlow,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("flow"))?;
        sqlx::query("DELETE FROM selfservice_flows WHERE expires_at < $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err("flow"))?;
        sqlx::query(
            "INSERT INTO selfservice_flows (id, hash, purpose, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4::jsonb, $5, $6)",
        )
        .bind(&f.id)
        .bind(&f.hash)
        .bind(&f.purpose)
        .bind(to_json_text(&f.state)?)
        .bind(f.created_at)
        .bind(f.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| super::classify(e, "flow id or hash"))?;
        tx.commit().await.map_err(err("flow"))?;
        Ok(())
    }

    pub(super) async fn flow_find(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<FlowRecord>, StoreError> {
        let row: Option<FlowRow> = sqlx::query_as(
            "SELECT id, purpose, state::text, version, created_at, expires_at \
             FROM selfservice_flows WHERE hash = $1 AND expires_at > $2",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("flow"))?;
        let Some((id, purpose, state, version, created_at, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(FlowRecord {
            id,
            purpose,
            state: from_json("flow state", &state)?,
            version,
            created_at,
            expires_at,
        }))
    }

    pub(super) async fn flow_update(
        &self,
        id: &str,
        version: i64,
        state: &serde_json::Value,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE selfservice_flows SET state = $1::jsonb, expires_at = $2, version = version + 1 \
             WHERE id = $3 AND version = $4",
        )
        .bind(to_json_text(state)?)
        .bind(expires_at)
        .bind(id)
        .bind(version)
        .execute(&self.pool)
        .await
        .map_err(err("flow"))?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn flow_delete(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM selfservice_flows WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(err("flow"))?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn request_open(
        &self,
        r: &NewResetRequest,
    ) -> Result<(ResetRequestRecord, bool), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO reset_requests (id, user_dn, user_name, status, created_at) \
             VALUES ($1, $2, $3, 'open', $4) ON CONFLICT DO NOTHING",
        )
        .bind(&r.id)
        .bind(&r.user_dn)
        .bind(&r.user_name)
        .bind(r.created_at)
        .execute(&self.pool)
        .await
        .map_err(err("reset request"))?
        .rows_affected()
            == 1;
        let row: RequestRow = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM reset_requests WHERE user_dn = $1 AND status = 'open'"
        ))
        .bind(&r.user_dn)
        .fetch_one(&self.pool)
        .await
        .map_err(err("reset request"))?;
        Ok((request(row), inserted))
    }

    pub(super) async fn request_list(
        &self,
        status: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ResetRequestRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Newest first; the page continues below the (created_at, id) of `before`.
        let rows: Vec<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM reset_requests \
             WHERE ($1::text IS NULL OR status = $1) \
               AND ($2::text IS NULL OR (created_at, id) < \
                    (SELECT created_at, id FROM reset_requests WHERE id = $2)) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ))
        .bind(status)
        .bind(before)
        .bind(i64::from(limit.min(MAX_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(err("reset request"))?;
        Ok(rows.into_iter().map(request).collect())
    }

    pub(super) async fn request_get(
        &self,
        id: &str,
    ) -> Result<Option<ResetRequestRecord>, StoreError> {
        let row: Option<RequestRow> = sqlx::query_as(concat!(
            "SELECT ",
            request_columns!(),
            " FROM reset_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("reset request"))?;
        Ok(row.map(request))
    }

    pub(super) async fn request_close(
        &self,
        user_dn: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE reset_requests SET status = 'closed', closed_at = $1, closed_by = $2 \
             WHERE user_dn = $3 AND status = 'open'",
        )
        .bind(at)
        .bind(by)
        .bind(user_dn)
        .execute(&self.pool)
        .await
        .map_err(err("reset request"))?;
        Ok(done.rows_affected())
    }

    pub(super) async fn request_dismiss(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE reset_requests SET status = 'dismissed', closed_at = $1, closed_by = $2, \
             reason = $3 WHERE id = $4 AND status = 'open'",
        )
        .bind(at)
        .bind(by)
        .bind(reason)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("reset request"))?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn welcome_insert(&self, w: &NewWelcomeLink) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("welcome link"))?;
        sqlx::query("DELETE FROM welcome_links WHERE expires_at < $1")
            .bind(w.created_at - chrono::Duration::days(7))
            .execute(&mut *tx)
            .await
            .map_err(err("welcome link"))?;
        sqlx::query(
            "INSERT INTO welcome_links (hash, user_dn, user_name, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&w.hash)
        .bind(&w.user_dn)
        .bind(&w.user_name)
        .bind(w.created_at)
        .bind(w.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| super::classify(e, "welcome link"))?;
        tx.commit().await.map_err(err("welcome link"))?;
        Ok(())
    }

    pub(super) async fn welcome_find(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<WelcomeLinkRecord>, StoreError> {
        let row: Option<(String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT user_dn, user_name, expires_at FROM welcome_links \
             WHERE hash = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("welcome link"))?;
        Ok(
            row.map(|(user_dn, user_name, expires_at)| WelcomeLinkRecord {
                user_dn,
                user_name,
                expires_at,
            }),
        )
    }

    pub(super) async fn welcome_use(
        &self,
        hash: &[u8],
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE welcome_links SET used_at = $1 \
             WHERE hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(at)
        .bind(hash)
        .execute(&self.pool)
        .await
        .map_err(err("welcome link"))?;
        Ok(done.rows_affected() == 1)
    }
}
