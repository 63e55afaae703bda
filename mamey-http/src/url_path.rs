//! [`url_path`]: a request path built from segments, each percent-encoded.

use std::fmt::Write as _;

/// A path for [`ServiceClient`](crate::ServiceClient) calls built from
/// `segments`, each percent-encoded, so a value from outside stays one
/// segment: `?`, `#`, `/`, `%` and spaces in it cannot start a query, a
/// fragment or another route.
///
/// Every byte outside RFC 3986's unreserved set (`A–Z a–z 0–9 - . _ ~`) is
/// written as `%XX` of its UTF-8 encoding.
///
/// ```
/// use mamey_http::url_path;
///
/// assert_eq!(url_path(["prices", "A-1"]), "/prices/A-1");
/// assert_eq!(url_path(["prices", "A?x=1"]), "/prices/A%3Fx%3D1");
/// assert_eq!(url_path(["prices", "A/B"]), "/prices/A%2FB");
/// assert_eq!(url_path(["prices", "A B#f"]), "/prices/A%20B%23f");
/// assert_eq!(url_path(["café"]), "/caf%C3%A9");
/// assert_eq!(url_path::<[&str; 0], &str>([]), "/");
/// ```
pub fn url_path<I, S>(segments: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut path = String::new();
    for segment in segments {
        path.push('/');
        for byte in segment.as_ref().bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                path.push(char::from(byte));
            } else {
                // Writing to a `String` cannot fail.
                let _ = write!(path, "%{byte:02X}");
            }
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::url_path;

    #[test]
    fn dot_segments_and_percent_signs_stay_data() {
        // `..` is unreserved and stays; a server resolving dot segments
        // would still see it only as a whole segment of ours.
        assert_eq!(url_path(["a", "..", "b"]), "/a/../b");
        assert_eq!(url_path(["100%"]), "/100%25");
        assert_eq!(url_path(["\n\0"]), "/%0A%00");
        assert_eq!(url_path([""]), "/");
    }
}
