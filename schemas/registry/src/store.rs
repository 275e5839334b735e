//! PostgreSQL storage of the registry. Registration runs in a transaction holding an advisory
//! lock on the subject, so concurrent registrations (from any number of instances) get
//! consecutive versions; schema ids are unique per normalised schema text.

use apache_avro::Schema;
use sqlx::{PgPool, Row};

use crate::compat::Level;
use crate::error::RegistryError;

/// One version of a subject.
#[derive(Debug, Clone)]
pub struct Version {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub schema: String,
}

/// `latest` or a number.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    Latest,
    Number(i32),
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    default_level: Level,
}

fn store(error: sqlx::Error) -> RegistryError {
    RegistryError::Store(error)
}

fn parse(text: &str) -> Result<Schema, RegistryError> {
    Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))
}

impl Store {
    pub fn new(pool: PgPool, default_level: Level) -> Self {
        Self {
            pool,
            default_level,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Registers `text` under `subject` (idempotent) and returns its schema id.
    pub async fn register(
        &self,
        subject: &str,
        text: &str,
        schema: &Schema,
        fingerprint: &[u8],
    ) -> Result<i32, RegistryError> {
        // Read before the transaction: holding its connection while asking the pool for
        // another could exhaust the pool under concurrent registrations.
        let level = self.level(Some(subject)).await?;
        let mut tx = self.pool.begin().await.map_err(store)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('schema-registry:' || $1))")
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map_err(store)?;
        let existing: Option<i32> = sqlx::query_scalar(
            "SELECT s.id FROM sr_subject_versions v JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND NOT v.deleted AND s.fingerprint = $2",
        )
        .bind(subject)
        .bind(fingerprint)
        .fetch_optional(&mut *tx)
        .await
        .map_err(store)?;
        if let Some(id) = existing {
            return Ok(id);
        }
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT s.schema FROM sr_subject_versions v JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version",
        )
        .bind(subject)
        .fetch_all(&mut *tx)
        .await
        .map_err(store)?;
        let live = live
            .iter()
            .map(|t| parse(t))
            .collect::<Result<Vec<_>, _>>()?;
        let problems = level.check(schema, &live);
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible {
                subject: subject.to_owned(),
                details: problems.join("; "),
            });
        }
        let id: i32 = sqlx::query_scalar(
            "INSERT INTO sr_schemas (fingerprint, schema) VALUES ($1, $2)
             ON CONFLICT (fingerprint) DO UPDATE SET fingerprint = EXCLUDED.fingerprint
             RETURNING id",
        )
        .bind(fingerprint)
        .bind(text)
        .fetch_one(&mut *tx)
        .await
        .map_err(store)?;
        sqlx::query(
            "INSERT INTO sr_subject_versions (subject, version, schema_id)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2 FROM sr_subject_versions WHERE subject = $1",
        )
        .bind(subject)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(store)?;
        tx.commit().await.map_err(store)?;
        Ok(id)
    }

    /// The live version of `subject` whose schema has this fingerprint.
    pub async fn lookup(
        &self,
        subject: &str,
        fingerprint: &[u8],
    ) -> Result<Version, RegistryError> {
        self.require_subject(subject, false).await?;
        let row = sqlx::query(
            "SELECT v.version, s.id, s.schema FROM sr_subject_versions v
             JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND NOT v.deleted AND s.fingerprint = $2",
        )
        .bind(subject)
        .bind(fingerprint)
        .fetch_optional(&self.pool)
        .await
        .map_err(store)?
        .ok_or_else(|| RegistryError::SchemaNotFound("not found under this subject".to_owned()))?;
        version_of(subject, &row)
    }

    pub async fn schema_by_id(&self, id: i32) -> Result<String, RegistryError> {
        sqlx::query_scalar("SELECT schema FROM sr_schemas WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store)?
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    pub async fn subjects(&self, deleted: bool) -> Result<Vec<String>, RegistryError> {
        sqlx::query_scalar(
            "SELECT subject FROM sr_subject_versions GROUP BY subject
             HAVING $1 OR bool_or(NOT deleted) ORDER BY subject",
        )
        .bind(deleted)
        .fetch_all(&self.pool)
        .await
        .map_err(store)
    }

    pub async fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<i32>, RegistryError> {
        let versions: Vec<i32> = sqlx::query_scalar(
            "SELECT version FROM sr_subject_versions WHERE subject = $1 AND ($2 OR NOT deleted)
             ORDER BY version",
        )
        .bind(subject)
        .bind(deleted)
        .fetch_all(&self.pool)
        .await
        .map_err(store)?;
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    pub async fn version(
        &self,
        subject: &str,
        which: Which,
        deleted: bool,
    ) -> Result<Version, RegistryError> {
        // With `deleted`, a version of a subject deleted whole is still found.
        self.require_subject(subject, deleted).await?;
        let number = match which {
            Which::Number(n) => n,
            Which::Latest => -1,
        };
        let row = sqlx::query(
            "SELECT v.version, s.id, s.schema FROM sr_subject_versions v
             JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND ($3 OR NOT v.deleted) AND ($2 = -1 OR v.version = $2)
             ORDER BY v.version DESC LIMIT 1",
        )
        .bind(subject)
        .bind(number)
        .bind(deleted)
        .fetch_optional(&self.pool)
        .await
        .map_err(store)?
        .ok_or_else(|| RegistryError::VersionNotFound(number.to_string()))?;
        version_of(subject, &row)
    }

    /// The subject's live schemas, oldest first.
    pub async fn live_schemas(&self, subject: &str) -> Result<Vec<Schema>, RegistryError> {
        let texts: Vec<String> = sqlx::query_scalar(
            "SELECT s.schema FROM sr_subject_versions v JOIN sr_schemas s ON s.id = v.schema_id
             WHERE v.subject = $1 AND NOT v.deleted ORDER BY v.version",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map_err(store)?;
        texts.iter().map(|t| parse(t)).collect()
    }

    async fn require_subject(&self, subject: &str, deleted: bool) -> Result<(), RegistryError> {
        self.versions(subject, deleted).await.map(|_| ())
    }

    /// The subject's own level (None if unset), or the global level for `None`.
    pub async fn configured_level(
        &self,
        subject: Option<&str>,
    ) -> Result<Option<Level>, RegistryError> {
        let raw: Option<String> =
            sqlx::query_scalar("SELECT compatibility FROM sr_config WHERE subject = $1")
                .bind(subject.unwrap_or(""))
                .fetch_optional(&self.pool)
                .await
                .map_err(store)?;
        Ok(raw.as_deref().and_then(Level::parse))
    }

    /// The level that applies to `subject`: its own, else the global one, else the default.
    pub async fn level(&self, subject: Option<&str>) -> Result<Level, RegistryError> {
        if let Some(level) = self.configured_level(subject).await? {
            return Ok(level);
        }
        Ok(self
            .configured_level(None)
            .await?
            .unwrap_or(self.default_level))
    }

    pub async fn set_level(
        &self,
        subject: Option<&str>,
        level: Level,
    ) -> Result<(), RegistryError> {
        sqlx::query(
            "INSERT INTO sr_config (subject, compatibility) VALUES ($1, $2)
             ON CONFLICT (subject) DO UPDATE SET compatibility = EXCLUDED.compatibility",
        )
        .bind(subject.unwrap_or(""))
        .bind(level.as_str())
        .execute(&self.pool)
        .await
        .map_err(store)?;
        Ok(())
    }

    pub async fn delete_level(&self, subject: &str) -> Result<Option<Level>, RegistryError> {
        let old: Option<String> =
            sqlx::query_scalar("DELETE FROM sr_config WHERE subject = $1 RETURNING compatibility")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await
                .map_err(store)?;
        Ok(old.as_deref().and_then(Level::parse))
    }

    /// Soft-deletes one version; returns its number.
    pub async fn delete_version(&self, subject: &str, which: Which) -> Result<i32, RegistryError> {
        let version = self.version(subject, which, false).await?.version;
        sqlx::query(
            "UPDATE sr_subject_versions SET deleted = true WHERE subject = $1 AND version = $2",
        )
        .bind(subject)
        .bind(version)
        .execute(&self.pool)
        .await
        .map_err(store)?;
        Ok(version)
    }

    /// Soft-deletes every live version of a subject; returns their numbers. One statement
    /// finds and deletes them, so the answer names exactly what it deleted: before, a version
    /// registered between a read of the list and the update was deleted without being named.
    pub async fn delete_subject(&self, subject: &str) -> Result<Vec<i32>, RegistryError> {
        let mut versions: Vec<i32> = sqlx::query_scalar(
            "UPDATE sr_subject_versions SET deleted = true
             WHERE subject = $1 AND NOT deleted RETURNING version",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map_err(store)?;
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        versions.sort_unstable();
        Ok(versions)
    }
}

fn version_of(subject: &str, row: &sqlx::postgres::PgRow) -> Result<Version, RegistryError> {
    Ok(Version {
        subject: subject.to_owned(),
        version: row.try_get("version").map_err(store)?,
        id: row.try_get("id").map_err(store)?,
        schema: row.try_get("schema").map_err(store)?,
    })
}
