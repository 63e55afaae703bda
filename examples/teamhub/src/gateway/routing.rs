//! Where a public request goes: `/api/{service}/{rest}?{query}` to service
//! `{service}` at `/{rest}?{query}`, which requests need no token, and how
//! a service's `Location` reads from outside.

use http::Method;

use crate::{boards, chat, identity, notifications};

/// The services behind the gateway, by the prefix they are reached at
/// (`/api/{name}`).
pub(super) const ROUTED: [&str; 4] = [
    identity::NAME,
    boards::NAME,
    chat::NAME,
    notifications::NAME,
];

/// A request's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    /// The service.
    pub(super) service: &'static str,
    /// The service's path, from its `/`, with the query string; still
    /// percent-encoded as the client sent it.
    pub(super) path: String,
}

impl Route {
    /// The path without the query string.
    fn bare_path(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(path, _)| path)
    }

    /// Whether the request may go without a token: signing up, in and
    /// refreshing, identity's public key, and the services' health
    /// (what the launcher polls through the gateway).
    pub(super) fn is_public(&self, method: &Method) -> bool {
        let path = self.bare_path();
        if *method == Method::POST {
            return self.service == identity::NAME
                && matches!(path, "/sign-up" | "/sign-in" | "/refresh");
        }
        if *method == Method::GET || *method == Method::HEAD {
            return matches!(path, "/health/live" | "/health/ready")
                || (self.service == identity::NAME && path == "/.well-known/jwks.json");
        }
        false
    }
}

/// The route of a public `path_and_query`, or `None` when it names no
/// routed service.
pub(super) fn route(path_and_query: &str) -> Option<Route> {
    let rest = path_and_query.strip_prefix("/api/")?;
    let (name, path) = rest.split_at(rest.find('/')?);
    let service = ROUTED.into_iter().find(|routed| *routed == name)?;
    Some(Route {
        service,
        path: path.to_owned(),
    })
}

/// A `location` answered by `service`, as the client must follow it:
/// under `/api/{service}`. An absolute URL (the service's internal
/// address) keeps only its path; a relative reference stays as it is.
pub(super) fn public_location(service: &str, location: &str) -> String {
    let absolute = ["http://", "https://", "//"]
        .iter()
        .find_map(|scheme| location.strip_prefix(scheme));
    let path = match absolute {
        Some(authority_and_path) => authority_and_path
            .find(['/', '?'])
            .map_or("/", |start| &authority_and_path[start..]),
        None if location.starts_with('/') => location,
        None => return location.to_owned(),
    };
    if path.starts_with('/') {
        format!("/api/{service}{path}")
    } else {
        format!("/api/{service}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(service: &'static str, path: &str) -> Option<Route> {
        Some(Route {
            service,
            path: path.to_owned(),
        })
    }

    #[test]
    fn the_prefix_names_the_service() {
        assert_eq!(route("/api/boards/cards/7"), to("boards", "/cards/7"));
        assert_eq!(
            route("/api/chat/channels/board:1/messages?after=5&limit=2"),
            to("chat", "/channels/board:1/messages?after=5&limit=2")
        );
        assert_eq!(route("/api/identity/sign-in"), to("identity", "/sign-in"));
        assert_eq!(route("/api/notifications/"), to("notifications", "/"));
        assert_eq!(
            route("/api/chat/channels/dm%3A1%3A2/messages"),
            to("chat", "/channels/dm%3A1%3A2/messages"),
            "encoded as sent"
        );
    }

    #[test]
    fn other_paths_are_not_routed() {
        for path in [
            "/api/nowhere/x",
            "/api/automations/rules",
            "/api/gateway/health/ready",
            "/api/boards",
            "/api/boards?x=1",
            "/api/",
            "/boards/cards/7",
            "/api//boards/x",
            "/api/Boards/x",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn only_the_sign_in_paths_and_probes_are_public() {
        let public = |method: Method, path: &str| route(path).unwrap().is_public(&method);
        assert!(public(Method::POST, "/api/identity/sign-up"));
        assert!(public(Method::POST, "/api/identity/sign-in"));
        assert!(public(Method::POST, "/api/identity/refresh?x=1"));
        assert!(public(Method::GET, "/api/identity/.well-known/jwks.json"));
        assert!(public(Method::GET, "/api/boards/health/ready"));
        assert!(public(Method::HEAD, "/api/chat/health/live"));

        assert!(!public(Method::GET, "/api/identity/sign-in"));
        assert!(!public(Method::POST, "/api/boards/sign-up"));
        assert!(!public(Method::POST, "/api/identity/sign-up/x"));
        assert!(!public(Method::GET, "/api/identity/me"));
        assert!(!public(Method::GET, "/api/boards/.well-known/jwks.json"));
        assert!(!public(Method::DELETE, "/api/boards/health/ready"));
        assert!(!public(
            Method::GET,
            "/api/boards/health/ready/../../workspaces/1"
        ));
        assert!(!public(Method::GET, "/api/boards/metrics"));
        assert!(!public(Method::GET, "/api/identity/openapi.json"));
    }

    #[test]
    fn locations_point_under_the_prefix() {
        assert_eq!(public_location("boards", "/cards/7"), "/api/boards/cards/7");
        assert_eq!(
            public_location("identity", "/users/5?x=1"),
            "/api/identity/users/5?x=1"
        );
        assert_eq!(
            public_location("chat", "http://127.0.0.1:40123/messages/9"),
            "/api/chat/messages/9",
            "the internal address stays inside"
        );
        assert_eq!(public_location("chat", "https://10.0.0.4"), "/api/chat/");
        assert_eq!(
            public_location("chat", "//10.0.0.4:80/m?x"),
            "/api/chat/m?x"
        );
        assert_eq!(public_location("chat", "http://h?x=1"), "/api/chat/?x=1");
        assert_eq!(public_location("chat", "messages/9"), "messages/9");
    }
}
