//! The relay's schema registry client, and the registration of every event type's newest
//! schema before it publishes.

use crate::RelayError;

/// The relay's registry client: with HTTP Basic credentials when a password is configured
/// (the registry refuses writes without them).
pub(crate) fn encoder(
    registry: &infra::settings::RegistrySettings,
) -> Result<schemas::wire::EventEncoder, RelayError> {
    use infra::secrecy::ExposeSecret;
    let password = infra::settings::secret_value(&registry.password, &registry.password_file)
        .map_err(|e| RelayError::RegistryClient(Box::new(e)))?;
    if password.expose_secret().is_empty() {
        return Ok(schemas::wire::EventEncoder::new(&registry.url));
    }
    schemas::wire::EventEncoder::with_basic(&registry.url, &registry.user, password.expose_secret())
        .map_err(|e| RelayError::RegistryClient(Box::new(e)))
}

/// Registers every event type's newest schema under its subject, so consumers can decode
/// from the first message and an incompatible schema stops the relay before it publishes.
pub(crate) async fn register_schemas(
    encoder: &schemas::wire::EventEncoder,
    prefix: &str,
) -> Result<(), RelayError> {
    for (event_type, versions) in schemas::catalogue() {
        let Some(schema) = versions.last() else {
            continue;
        };
        let topic = infra::kafka::topic_for(prefix, schema.file.aggregate);
        encoder
            .register(&topic, schema)
            .await
            .map_err(|source| RelayError::Registry {
                event_type: event_type.to_string(),
                source,
            })?;
    }
    Ok(())
}
