//! Who is using the console: the access token in the session cookie (or an
//! `Authorization: Bearer` header), verified on every request with the query API's verifier,
//! and the CSRF token that every action form carries.
//!
//! The cookie holds the command API's access token itself, so the console keeps no session
//! state: it is `HttpOnly` (no script reads it; the pages have none anyway), `SameSite=Strict`
//! (no other site's page sends it), `Path=/admin`, `Secure` over HTTPS, and lives as long as
//! the token. An expired or invalid cookie sends the browser back to the login form.
//!
//! CSRF: an action (a POST form) carries `csrf`, SHA-256 of the access token and a fixed label,
//! compared in constant time. Another site can neither read the token nor forge the value, and
//! a new login gives a new one. A request with a bearer header needs none: a browser never
//! adds that header by itself.

use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use infra::auth::{extract::bearer, Principal, Role, Verifier};
use sha2::{Digest, Sha256};

use super::error::AdminError;

/// The session cookie's name.
pub const COOKIE: &str = "admin_session";
/// What the CSRF token is derived with, besides the access token.
const CSRF_LABEL: &[u8] = b"commerce admin console: csrf v1";
/// What a notice's seal is derived with, before the notice itself ([`Staff::seal`]).
const NOTICE_LABEL: &str = "commerce admin console: notice v1: ";

/// The CSRF token of a session with `access_token`: hex SHA-256 of the token and the label.
pub fn csrf_token(access_token: &str) -> String {
    session_digest(access_token, CSRF_LABEL)
}

/// Hex SHA-256 of a session's access token and `what`: a value only that session's pages can
/// hold.
fn session_digest(access_token: &str, what: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(access_token.as_bytes());
    hasher.update([0u8]);
    hasher.update(what);
    hex::encode(hasher.finalize())
}

/// Whether `presented` is the CSRF token of `access_token`, compared in constant time.
pub fn csrf_matches(access_token: &str, presented: &str) -> bool {
    let expected = csrf_token(access_token);
    verify_slices_are_equal(expected.as_bytes(), presented.as_bytes()).is_ok()
}

/// `Set-Cookie` for a new session: the token, for `max_age` seconds.
pub fn session_cookie(token: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// `Set-Cookie` that removes the session.
pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("admin_session=; Path=/admin; Max-Age=0; HttpOnly; SameSite=Strict")
}

/// Whether the request reached the service over HTTPS, as a proxy in front says
/// (`X-Forwarded-Proto`), or the setting says it always does.
pub fn over_https(headers: &HeaderMap, always: bool) -> bool {
    always
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// False when the browser says the request comes from another site's page: `Sec-Fetch-Site`
/// other than `same-origin` or `none` (typed or bookmarked), or, from a browser without it, an
/// `Origin` whose host is not this request's `Host` (or an opaque `null` one). Clients that
/// send neither are no browsers and cannot be made to post by another site. Guards the login
/// form against login CSRF (a victim logged into the attacker's account), which the session's
/// CSRF token cannot, having no session yet. (The console's pages send no referrer, so
/// Chromium's own form posts carry `Origin: null` and are known by `Sec-Fetch-Site`.)
pub fn same_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return site == "same-origin" || site == "none";
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// The session cookie's value, if the request has one.
fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty() && value.len() <= 8192)
}

/// A console user: a verified principal with `support` or `admin`.
#[derive(Debug, Clone)]
pub struct Staff {
    pub principal: Principal,
    token: String,
    from_cookie: bool,
}

impl Staff {
    /// Whether this user may act (retry, discard): `admin` only.
    pub fn may_act(&self) -> bool {
        self.principal.has(Role::Admin)
    }

    /// The CSRF token for this session's forms.
    pub fn csrf(&self) -> String {
        csrf_token(&self.token)
    }

    /// The seal of a notice this session's action leads to (`what`, e.g. `retried:42`): the
    /// page after a redirect shows the notice only with it, so a link cannot make the console
    /// say something was done.
    pub fn seal(&self, what: &str) -> String {
        session_digest(&self.token, format!("{NOTICE_LABEL}{what}").as_bytes())
    }

    /// Whether `seal` is this session's seal of `what`, compared in constant time.
    pub fn sealed(&self, what: &str, seal: &str) -> bool {
        verify_slices_are_equal(self.seal(what).as_bytes(), seal.as_bytes()).is_ok()
    }

    /// The token's subject, for the log and the page header.
    pub fn actor(&self) -> String {
        self.principal.sub()
    }

    /// May this request carry out an action: the role, and (for a cookie session) the form's
    /// CSRF token.
    pub fn authorize_action(&self, csrf: Option<&str>) -> Result<(), AdminError> {
        if !self.may_act() {
            return Err(AdminError::Forbidden(
                "only the admin role may retry or discard; support may look only".into(),
            ));
        }
        self.check_csrf(csrf)
    }

    /// For a cookie session, `csrf` must be this session's token.
    pub fn check_csrf(&self, csrf: Option<&str>) -> Result<(), AdminError> {
        if self.from_cookie && !csrf.is_some_and(|c| csrf_matches(&self.token, c)) {
            return Err(AdminError::Forbidden(
                "the form is not from this session (it may be from before a new login): \
                 reload the page and try again"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Whether `principal` may use the console at all.
pub fn is_staff(principal: &Principal) -> bool {
    principal.has_any(&[Role::Support, Role::Admin])
}

impl<S: Send + Sync> FromRequestParts<S> for Staff {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let verifier = parts
            .extensions
            .get::<Arc<Verifier>>()
            .cloned()
            .ok_or_else(|| AdminError::Internal("no token verifier".into()))?;
        let header = bearer(parts).map_err(|_| AdminError::Unauthenticated)?;
        let (token, from_cookie) = match header {
            Some(token) => (token.to_owned(), false),
            None => match cookie_token(&parts.headers) {
                Some(token) => (token.to_owned(), true),
                None => return Err(AdminError::LoginRequired { expired: false }),
            },
        };
        let principal = match verifier.verify(&token).await {
            Ok(principal) => principal,
            Err(_) if !from_cookie => return Err(AdminError::Unauthenticated),
            // Expired (or the keys rotated away): log in again.
            Err(_) => return Err(AdminError::LoginRequired { expired: true }),
        };
        if !is_staff(&principal) {
            return Err(AdminError::Forbidden(
                "the console is for the support and admin roles".into(),
            ));
        }
        Ok(Self {
            principal,
            token,
            from_cookie,
        })
    }
}

#[cfg(test)]
mod tests {
    use infra::auth::Subject;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn only_same_site_logins_are_taken() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(same_site(&headers(&[])), "no browser, no CSRF");
        assert!(same_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(same_site(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "null"),
            ("host", "127.0.0.1:8081")
        ])));
        assert!(same_site(&headers(&[
            ("origin", "http://127.0.0.1:8081"),
            ("host", "127.0.0.1:8081")
        ])));
        assert!(!same_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!same_site(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "127.0.0.1:8081")
        ])));
        assert!(!same_site(&headers(&[("origin", "null"), ("host", "a")])));
    }

    fn staff(roles: &[Role], from_cookie: bool) -> Staff {
        Staff {
            principal: Principal::new(Subject::User(Uuid::now_v7()), roles.iter().copied()),
            token: "header.claims.signature".into(),
            from_cookie,
        }
    }

    #[test]
    fn the_csrf_token_is_bound_to_the_access_token() {
        let token = csrf_token("a.b.c");
        assert_eq!(token.len(), 64);
        assert_eq!(token, csrf_token("a.b.c"));
        assert_ne!(token, csrf_token("a.b.d"));
        assert!(csrf_matches("a.b.c", &token));
        assert!(!csrf_matches("a.b.d", &token));
        assert!(!csrf_matches("a.b.c", &token[..63]));
        assert!(!csrf_matches("a.b.c", ""));
        assert!(!csrf_matches("a.b.c", &token.to_uppercase()));
    }

    #[test]
    fn an_action_needs_the_admin_role_and_for_a_cookie_the_forms_token() {
        let admin = staff(&[Role::Admin], true);
        assert!(admin.authorize_action(Some(&admin.csrf())).is_ok());
        assert!(admin.authorize_action(None).is_err());
        assert!(admin
            .authorize_action(Some("0".repeat(64).as_str()))
            .is_err());
        let support = staff(&[Role::Customer, Role::Support], true);
        assert!(matches!(
            support.authorize_action(Some(&support.csrf())),
            Err(AdminError::Forbidden(_))
        ));
        // A bearer header is never sent by a browser on its own: no CSRF token needed.
        let bearer = staff(&[Role::Admin], false);
        assert!(bearer.authorize_action(None).is_ok());
    }

    #[test]
    fn the_cookie_is_found_among_others_and_is_strict() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; admin_session=tok.en.x ; b=2"),
        );
        assert_eq!(cookie_token(&headers), Some("tok.en.x"));
        let cookie = session_cookie("t", 900, true).expect("a header value");
        let text = cookie.to_str().expect("text");
        for part in [
            "admin_session=t",
            "Path=/admin",
            "Max-Age=900",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        let plain = session_cookie("t", 900, false).expect("a header value");
        assert!(!plain.to_str().expect("text").contains("Secure"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(over_https(&headers, false));
        assert!(!over_https(&HeaderMap::new(), false));
        assert!(over_https(&HeaderMap::new(), true));
    }
}
