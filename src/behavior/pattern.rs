//! CloudFront path patterns: `*` and `?` wildcards over the URL path.

use std::fmt;
use std::str::FromStr;

use super::BehaviorError;

/// CloudFront's limit on the length of a path pattern.
const MAX_LEN: usize = 255;

/// The path pattern of a cache behavior, in CloudFront syntax.
///
/// `*` matches any sequence of characters, `/` included; `?` matches exactly one character;
/// everything else matches itself, case-sensitively. The pattern is matched against the
/// whole URL path, without the query string. Matching takes at most
/// `O(pattern × path)` steps, whatever the pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PathPattern(Box<str>);

impl PathPattern {
    /// Parses a pattern. It must start with `/` or `*`, be at most 255 characters long, and
    /// contain no control or whitespace characters.
    pub fn new(pattern: &str) -> Result<Self, BehaviorError> {
        let reject = |reason| {
            Err(BehaviorError::PathPattern {
                pattern: pattern.to_owned(),
                reason,
            })
        };
        if pattern.is_empty() {
            return reject("is empty");
        }
        if !pattern.starts_with(['/', '*']) {
            return reject("must start with '/' or '*'");
        }
        if pattern.chars().count() > MAX_LEN {
            return reject("is longer than 255 characters");
        }
        if pattern.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return reject("contains a control or whitespace character");
        }
        Ok(Self(pattern.into()))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` (a URL path without its query) matches the pattern.
    pub fn matches(&self, path: &str) -> bool {
        wildcard_match(self.0.as_bytes(), path.as_bytes())
    }
}

impl FromStr for PathPattern {
    type Err = BehaviorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Greedy two-pointer wildcard matching. Only the most recent `*` is ever retried: an
/// earlier star can absorb anything a later one could, so backtracking further is useless,
/// and the run time stays `O(pattern × path)` instead of exponential.
///
/// Both inputs are UTF-8 and stay on character boundaries: literals compare whole encoded
/// characters byte by byte, `?` and star retries advance by one whole character.
fn wildcard_match(pattern: &[u8], path: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    // Pattern index just after the last `*`, and where that star's match currently ends.
    let mut star: Option<(usize, usize)> = None;
    while s < path.len() {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, s));
                continue;
            }
            Some(b'?') => {
                p += 1;
                s += char_len(path[s]);
                continue;
            }
            Some(&c) if c == path[s] => {
                p += 1;
                s += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((after_star, end)) => {
                // Let the star swallow one more character and retry what follows it.
                let end = end + char_len(path[end]);
                star = Some((after_star, end));
                p = after_star;
                s = end;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The length of the UTF-8 character starting with `lead`.
fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        PathPattern::new(pattern).unwrap().matches(path)
    }

    #[test]
    fn extension_under_directory() {
        assert!(m("/images/*.jpg", "/images/a.jpg"));
        assert!(m("/images/*.jpg", "/images/2024/summer/a.jpg"));
        assert!(!m("/images/*.jpg", "/images/a.jpeg"));
        assert!(!m("/images/*.jpg", "/img/a.jpg"));
        assert!(!m("/images/*.jpg", "/images/a.jpg/x"));
    }

    #[test]
    fn prefix() {
        assert!(m("/api/*", "/api/"));
        assert!(m("/api/*", "/api/v1/users"));
        assert!(!m("/api/*", "/api"));
        assert!(!m("/api/*", "/apiv1/x"));
    }

    #[test]
    fn leading_star() {
        assert!(m("*.css", "/a.css"));
        assert!(m("*.css", "/deep/path/site.min.css"));
        assert!(!m("*.css", "/a.css.map"));
    }

    #[test]
    fn question_mark_is_one_character() {
        assert!(m("/a?c", "/abc"));
        assert!(m("/a?c", "/a/c"));
        assert!(!m("/a?c", "/ac"));
        assert!(!m("/a?c", "/abbc"));
        assert!(m("/a?c", "/aéc"));
    }

    #[test]
    fn slash_star_matches_every_path() {
        for path in ["/", "/a", "/a/b/c.d", "/%20?x"] {
            assert!(m("/*", path), "{path}");
            assert!(m("*", path), "{path}");
        }
    }

    #[test]
    fn case_sensitive() {
        assert!(!m("/Images/*", "/images/a"));
        assert!(!m("*.JPG", "/a.jpg"));
    }

    #[test]
    fn pathological_patterns_finish() {
        // Exponential backtracking would not finish on these; the greedy matcher does
        // at most pattern × path steps.
        let path = format!("/{}", "a".repeat(10_240));
        let pattern = format!("/{}b", "*a".repeat(100));
        assert!(!m(&pattern, &path));
        assert!(m(&format!("/{}", "*a".repeat(100)), &path));
        assert!(!m(&format!("/{}b", "*?".repeat(120)), &path));
        let pattern = format!("{}*", "/*".repeat(120));
        assert!(!m(&pattern, &format!("/{}", "x".repeat(10_240))));
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        for bad in [
            "",
            "images/*",
            "/a b",
            "/a\tb",
            "/a\u{7f}",
            &format!("/{}", "a".repeat(255)),
        ] {
            let err = PathPattern::new(bad).unwrap_err();
            assert!(
                matches!(err, BehaviorError::PathPattern { ref pattern, .. } if pattern == bad)
            );
        }
        assert!(PathPattern::new(&format!("/{}", "a".repeat(254))).is_ok());
        assert_eq!("/x/*".parse::<PathPattern>().unwrap().to_string(), "/x/*");
    }
}
