//! Unit tests of loading the settings: defaults, the conventional variables, `APP__` ones.

use super::*;
use secrecy::ExposeSecret;

#[test]
fn defaults_load_and_secrets_do_not_print() {
    let settings = Settings::load_from(None).unwrap();
    assert_eq!(settings.command_api.port, 8080);
    assert_eq!(settings.log.format, LogFormat::Json);
    assert!(settings
        .database
        .url
        .expose_secret()
        .starts_with("postgres://"));
    let debug = format!("{:?}", settings.database);
    assert!(!debug.contains("55432"), "the database URL leaked: {debug}");
    assert!(settings.kafka.create_topics);
    assert!(settings.kafka.properties.0.is_empty());
}

#[test]
fn conventional_variables_sit_between_the_file_and_app_variables() {
    let conventional = HashMap::from([
        (
            "database__url".to_owned(),
            "postgres://elsewhere:5432/x".to_owned(),
        ),
        ("log__filter".to_owned(), "debug".to_owned()),
    ]);
    let settings = Settings::load_with(None, conventional, None).unwrap();
    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://elsewhere:5432/x"
    );
    assert_eq!(settings.log.filter, "debug");
    // The defaults stay where nothing conventional is given.
    let settings = Settings::load_with(None, HashMap::new(), None).unwrap();
    assert_eq!(settings.log.filter, "info,sqlx=warn");
}

/// A variable's value is text until its setting asks for a number or a flag: a secret that
/// looks like a number stays exactly as written. Before, `0123456789` came out as
/// `123456789` (parsed as a number first).
#[test]
fn app_variables_that_look_like_numbers_stay_as_written() {
    let app = HashMap::from([
        (
            "APP__KAFKA__PROPERTIES__SASL_PASSWORD".to_owned(),
            "0123456789".to_owned(),
        ),
        ("APP__COMMAND_API__PORT".to_owned(), "8181".to_owned()),
        ("APP__KAFKA__CREATE_TOPICS".to_owned(), "false".to_owned()),
        ("APP__LOG__FILTER".to_owned(), "1e3".to_owned()),
    ]);
    let settings = Settings::load_with(None, HashMap::new(), Some(app)).unwrap();
    assert_eq!(settings.kafka.properties.0["sasl.password"], "0123456789");
    assert_eq!(settings.command_api.port, 8181);
    assert!(!settings.kafka.create_topics);
    assert_eq!(settings.log.filter, "1e3");
}
