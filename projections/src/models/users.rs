//! `rm_users`: one row per user with profile, addresses, roles and status.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::UserEvent;
use serde_json::{json, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{event, id, ApplyError};
use crate::bulk::{take_when_done, Fold, TableRows};
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

    fn fold(&self) -> Box<dyn Fold> {
        Box::<UsersFold>::default()
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

/// A row of `rm_users`, in memory.
struct UserRow {
    email: String,
    email_key: String,
    display_name: String,
    preferences: Value,
    addresses: Vec<Value>,
    roles: Vec<Value>,
    status: &'static str,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// `rm_users` folded in memory (see [`crate::bulk`]), with `apply`'s JSON operations:
/// `||` appends, `- role` removes every equal string, an address is removed by its `id`.
#[derive(Default)]
struct UsersFold {
    rows: HashMap<Uuid, UserRow>,
}

impl Fold for UsersFold {
    fn fold(&mut self, e: &Envelope) -> Result<(), ApplyError> {
        let user = id(e)?;
        let (version, at) = (e.sequence, e.occurred_at);
        let decoded = event::<UserEvent>(e)?;
        if let UserEvent::Registered {
            email,
            display_name,
            roles,
        } = &decoded
        {
            let roles = match json!(roles) {
                Value::Array(roles) => roles,
                other => vec![other],
            };
            self.rows.entry(user).or_insert_with(|| UserRow {
                email: email.as_str().to_owned(),
                email_key: email.normalized(),
                display_name: display_name.as_str().to_owned(),
                preferences: json!({}),
                addresses: Vec::new(),
                roles,
                status: "active",
                version,
                created_at: at,
                updated_at: at,
            });
            return Ok(());
        }
        let Some(row) = self.rows.get_mut(&user) else {
            return Ok(());
        };
        match decoded {
            UserEvent::Registered { .. } => return Ok(()),
            UserEvent::ProfileChanged {
                display_name,
                preferences,
            } => {
                if let Some(name) = display_name {
                    row.display_name = String::from(name);
                }
                if let Some(preferences) = preferences {
                    row.preferences = Value::from(preferences);
                }
            }
            UserEvent::EmailChanged { email, .. } => {
                row.email = email.as_str().to_owned();
                row.email_key = email.normalized();
            }
            UserEvent::AddressAdded {
                address_id,
                address,
            } => {
                let mut entry = json!(address);
                entry["id"] = json!(address_id);
                row.addresses.push(entry);
            }
            UserEvent::AddressRemoved { address_id } => {
                let removed = address_id.to_string();
                // `a->>'id' <> $4`: an entry without an id compares as null and goes too.
                row.addresses.retain(|a| match a.get("id") {
                    Some(Value::String(id)) => *id != removed,
                    Some(Value::Null) | None => false,
                    // A number, object or array as text never reads as a UUID: kept.
                    Some(_) => true,
                });
            }
            UserEvent::RoleGranted { role } => row.roles.push(json!(role.as_str())),
            UserEvent::RoleRevoked { role } => {
                row.roles.retain(|r| r.as_str() != Some(role.as_str()))
            }
            UserEvent::Deactivated { .. } => row.status = "deactivated",
        }
        (row.version, row.updated_at) = (version, at);
        Ok(())
    }

    fn take(&mut self, done: bool) -> Vec<TableRows> {
        let target = (
            "rm_users",
            "id, email, email_key, display_name, preferences, addresses, roles, status, \
             version, created_at, updated_at",
        );
        take_when_done(&mut self.rows, target, done, |out, id, row| {
            out.uuid(&id)
                .text(&row.email)
                .text(&row.email_key)
                .text(&row.display_name)
                .json(&row.preferences)
                .json(&Value::Array(row.addresses))
                .json(&Value::Array(row.roles))
                .text(row.status)
                .int(row.version)
                .time(&row.created_at)
                .time(&row.updated_at);
        })
    }
}
