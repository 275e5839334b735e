use cqrs_es::test::TestFramework;
use serde_json::json;

use super::*;
use crate::values::{AddressFields, Reason};

type UserTest = TestFramework<User>;

fn email(raw: &str) -> Email {
    Email::parse(raw).unwrap()
}
fn name(raw: &str) -> DisplayName {
    DisplayName::parse(raw).unwrap()
}
fn registered() -> UserEvent {
    UserEvent::Registered {
        email: email("ada@example.com"),
        display_name: name("Ada"),
        roles: vec![Role::Customer],
    }
}
fn address() -> Address {
    Address::parse(AddressFields {
        label: "home",
        line1: "1 Main St",
        line2: None,
        city: "Berlin",
        postal_code: "10115",
        country: "DE",
    })
    .unwrap()
}
fn added(id: Uuid) -> UserEvent {
    UserEvent::AddressAdded {
        address_id: id,
        address: address(),
    }
}
fn deactivated() -> UserEvent {
    UserEvent::Deactivated { reason: None }
}

#[test]
fn register_grants_the_customer_role() {
    UserTest::with(())
        .given_no_previous_events()
        .when(UserCommand::Register {
            email: email("ada@example.com"),
            display_name: name("Ada"),
        })
        .then_expect_events(vec![registered()]);
}

#[test]
fn register_twice_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::Register {
            email: email("x@example.com"),
            display_name: name("X"),
        })
        .then_expect_error(UserError::AlreadyRegistered);
}

#[test]
fn every_command_on_a_never_registered_user_is_not_found() {
    let commands = vec![
        UserCommand::ChangeProfile {
            display_name: Some(name("B")),
            preferences: None,
        },
        UserCommand::ChangeEmail {
            email: email("b@example.com"),
        },
        UserCommand::AddAddress {
            address_id: Uuid::nil(),
            address: address(),
        },
        UserCommand::RemoveAddress {
            address_id: Uuid::nil(),
        },
        UserCommand::GrantRole { role: Role::Admin },
        UserCommand::RevokeRole {
            role: Role::Customer,
        },
        UserCommand::Deactivate { reason: None },
    ];
    for command in commands {
        UserTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(UserError::NotFound);
    }
}

#[test]
fn change_profile_carries_only_what_changed() {
    let preferences = Preferences::parse(json!({"theme": "dark"})).unwrap();
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::ChangeProfile {
            display_name: None,
            preferences: Some(preferences.clone()),
        })
        .then_expect_events(vec![UserEvent::ProfileChanged {
            display_name: None,
            preferences: Some(preferences),
        }]);
}

#[test]
fn change_profile_with_nothing_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::ChangeProfile {
            display_name: None,
            preferences: None,
        })
        .then_expect_error(UserError::NothingToChange);
}

#[test]
fn change_email_records_the_previous_one() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::ChangeEmail {
            email: email("ada@new.example"),
        })
        .then_expect_events(vec![UserEvent::EmailChanged {
            previous_email: email("ada@example.com"),
            email: email("ada@new.example"),
        }]);
}

#[test]
fn change_email_to_the_same_address_is_refused() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::ChangeEmail {
            email: email("ada@example.com"),
        })
        .then_expect_error(UserError::EmailUnchanged);
}

#[test]
fn addresses_can_be_added_and_removed() {
    let id = Uuid::now_v7();
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::AddAddress {
            address_id: id,
            address: address(),
        })
        .then_expect_events(vec![added(id)]);
    UserTest::with(())
        .given(vec![registered(), added(id)])
        .when(UserCommand::RemoveAddress { address_id: id })
        .then_expect_events(vec![UserEvent::AddressRemoved { address_id: id }]);
}

#[test]
fn address_rules() {
    let id = Uuid::now_v7();
    UserTest::with(())
        .given(vec![registered(), added(id)])
        .when(UserCommand::AddAddress {
            address_id: id,
            address: address(),
        })
        .then_expect_error(UserError::AddressIdTaken);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::RemoveAddress { address_id: id })
        .then_expect_error(UserError::AddressNotFound);
    let mut full = vec![registered()];
    full.extend((0..MAX_ADDRESSES).map(|_| added(Uuid::now_v7())));
    UserTest::with(())
        .given(full)
        .when(UserCommand::AddAddress {
            address_id: Uuid::now_v7(),
            address: address(),
        })
        .then_expect_error(UserError::TooManyAddresses { max: MAX_ADDRESSES });
}

#[test]
fn roles_can_be_granted_and_revoked_once() {
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::GrantRole { role: Role::Admin })
        .then_expect_events(vec![UserEvent::RoleGranted { role: Role::Admin }]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::GrantRole {
            role: Role::Customer,
        })
        .then_expect_error(UserError::RoleAlreadyGranted(Role::Customer));
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::RevokeRole {
            role: Role::Customer,
        })
        .then_expect_events(vec![UserEvent::RoleRevoked {
            role: Role::Customer,
        }]);
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::RevokeRole { role: Role::Admin })
        .then_expect_error(UserError::RoleNotGranted(Role::Admin));
}

#[test]
fn deactivate_then_everything_is_refused() {
    let reason = Some(Reason::parse("left").unwrap());
    UserTest::with(())
        .given(vec![registered()])
        .when(UserCommand::Deactivate {
            reason: reason.clone(),
        })
        .then_expect_events(vec![UserEvent::Deactivated { reason }]);
    for command in [
        UserCommand::Deactivate { reason: None },
        UserCommand::GrantRole { role: Role::Admin },
        UserCommand::ChangeEmail {
            email: email("z@example.com"),
        },
    ] {
        UserTest::with(())
            .given(vec![registered(), deactivated()])
            .when(command)
            .then_expect_error(UserError::Deactivated);
    }
}

#[test]
fn email_events_claim_and_release_the_normalised_address() {
    use crate::UniqueClaim;
    let changed = UserEvent::EmailChanged {
        previous_email: email("Old@Example.com"),
        email: email("New@Example.com"),
    };
    assert_eq!(
        changed.unique_claims(),
        vec![
            UniqueClaim::Release {
                scope: "user_email",
                key: "old@example.com".into()
            },
            UniqueClaim::Claim {
                scope: "user_email",
                key: "new@example.com".into()
            },
        ]
    );
    assert!(deactivated().unique_claims().is_empty());
}
