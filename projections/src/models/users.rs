//! `rm_users`: one row per user with profile, addresses, roles and status.

use domain::UserEvent;
use serde_json::json;
use sqlx::PgConnection;

use super::{event, id, ApplyError};
use crate::envelope::Envelope;
use crate::projection::{ApplyFuture, Projection, ReadModel, Table};

/// The `users` read model.
pub struct Users;

impl Projection for Users {
    fn name(&self) -> &'static str {
        "users"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["user"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a> {
        Box::pin(apply(conn, event))
    }
}

impl ReadModel for Users {
    fn tables(&self) -> &'static [Table] {
        &[Table { name: "rm_users" }]
    }
}

async fn apply(conn: &mut PgConnection, e: &Envelope) -> Result<(), ApplyError> {
    let user = id(e)?;
    let (version, at) = (e.sequence, e.occurred_at);
    let update = |sql: &'static str| sqlx::query(sql).bind(user).bind(version).bind(at);
    match event::<UserEvent>(e)? {
        UserEvent::Registered {
            email,
            display_name,
            roles,
        } => {
            sqlx::query(
                "INSERT INTO rm_users (id, email, email_key, display_name, roles, status, version, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $7)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(user)
            .bind(email.as_str())
            .bind(email.normalized())
            .bind(display_name.as_str())
            .bind(json!(roles))
            .bind(version)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::ProfileChanged {
            display_name,
            preferences,
        } => {
            update(
                "UPDATE rm_users SET display_name = COALESCE($4, display_name),
                     preferences = COALESCE($5, preferences), version = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(display_name.map(String::from))
            .bind(preferences.map(serde_json::Value::from))
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::EmailChanged { email, .. } => {
            update("UPDATE rm_users SET email = $4, email_key = $5, version = $2, updated_at = $3 WHERE id = $1")
                .bind(email.as_str())
                .bind(email.normalized())
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::AddressAdded {
            address_id,
            address,
        } => {
            let mut entry = json!(address);
            entry["id"] = json!(address_id);
            update("UPDATE rm_users SET addresses = addresses || jsonb_build_array($4::jsonb), version = $2, updated_at = $3 WHERE id = $1")
                .bind(entry)
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::AddressRemoved { address_id } => {
            update(
                "UPDATE rm_users SET addresses = COALESCE((SELECT jsonb_agg(a) FROM jsonb_array_elements(addresses) a
                     WHERE a->>'id' <> $4), '[]'), version = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(address_id.to_string())
            .execute(&mut *conn)
            .await?;
        }
        UserEvent::RoleGranted { role } => {
            update("UPDATE rm_users SET roles = roles || jsonb_build_array($4::text), version = $2, updated_at = $3 WHERE id = $1")
                .bind(role.as_str())
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::RoleRevoked { role } => {
            update("UPDATE rm_users SET roles = roles - $4, version = $2, updated_at = $3 WHERE id = $1")
                .bind(role.as_str())
                .execute(&mut *conn)
                .await?;
        }
        UserEvent::Deactivated { .. } => {
            update("UPDATE rm_users SET status = 'deactivated', version = $2, updated_at = $3 WHERE id = $1")
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
