//! SockJS URL parsing.
//!
//! Meteor serves DDP over SockJS under `/sockjs/` (`/websocket` is rewritten there). Session
//! URLs look like `[prefix]/sockjs/<server>/<session>/<transport>`; every request of one session
//! must reach the backend that holds the session's state. Only that shape yields a session id:
//! `/sockjs/info`, `/sockjs/websocket` (raw WebSocket, one connection) and anything else do not.

/// The transports SockJS clients use for a session (see sockjs-node's `transport` table).
const TRANSPORTS: &[&str] = &[
    "websocket",
    "xhr",
    "xhr_send",
    "xhr_streaming",
    "eventsource",
    "htmlfile",
    "jsonp",
    "jsonp_send",
];

/// The SockJS session id in `path` (no query string), if it is a session URL.
pub fn session_id(path: &str) -> Option<&str> {
    // The first "/sockjs/", found by its slashes (a substring search sets up a searcher
    // first, which costs more than most paths are long).
    let start = path
        .match_indices('/')
        .map(|(i, _)| i)
        .find(|&i| path[i..].starts_with("/sockjs/"))?
        + "/sockjs/".len();
    let mut rest = path[start..].split('/');
    let (server, session, transport) = (rest.next()?, rest.next()?, rest.next()?);
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && !s.contains('.')
            && s.bytes().all(|b| b.is_ascii_graphic())
    };
    (rest.next().is_none() && valid(server) && valid(session) && TRANSPORTS.contains(&transport))
        .then_some(session)
}

#[cfg(test)]
mod tests {
    use super::session_id;

    #[test]
    fn session_urls() {
        assert_eq!(
            session_id("/sockjs/123/abcdefgh/xhr_streaming"),
            Some("abcdefgh")
        );
        assert_eq!(session_id("/sockjs/000/s1/xhr_send"), Some("s1"));
        assert_eq!(session_id("/app/sockjs/9/s2/websocket"), Some("s2"));
        assert_eq!(session_id("/sockjs/9/s2/eventsource"), Some("s2"));
    }

    #[test]
    fn non_session_urls() {
        for p in [
            "/",
            "/sockjs/info",
            "/sockjs/websocket",
            "/sockjs/1/s/unknown",
            "/sockjs/1/s/xhr/extra",
            "/sockjs/1/a.b/xhr",
            "/sockjs//s/xhr",
            "/sockjs/1//xhr",
            "/websocket",
        ] {
            assert_eq!(session_id(p), None, "{p}");
        }
    }
}
