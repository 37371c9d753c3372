//! The origin allow-list: protection against cross-site WebSocket hijacking, where a page on
//! another site opens a socket to us with the visitor's cookies. Browsers always send `Origin`;
//! a request without one is not from a browser and is let through.

/// Parsed `allowed_origins`: empty allows every origin.
#[derive(Clone, Debug, Default)]
pub(crate) struct OriginList {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
enum Entry {
    Any,
    Exact(String),
    /// `https://*.example.com`: the scheme and a host suffix (`.example.com`, port included).
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

impl OriginList {
    pub(crate) fn new(list: &[String]) -> OriginList {
        let entries = (list.iter())
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .map(|o| match o.split_once("://*.") {
                _ if o == "*" => Entry::Any,
                Some((scheme, rest)) => {
                    Entry::Subdomains { scheme: format!("{scheme}://"), suffix: format!(".{rest}") }
                }
                None => Entry::Exact(o),
            })
            .collect();
        OriginList { entries }
    }

    /// Whether a browser from `origin` may connect.
    pub(crate) fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.entries.is_empty() {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.entries.iter().any(|e| match e {
            Entry::Any => true,
            Entry::Exact(o) => *o == origin,
            Entry::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .is_some_and(|host| host.len() > suffix.len() && host.ends_with(suffix.as_str())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let list = OriginList::new(&["https://app.example.com".into(), "https://*.example.org/".into()]);
        assert!(list.allows(Some("https://app.example.com")));
        assert!(list.allows(Some("HTTPS://APP.example.com")));
        assert!(!list.allows(Some("http://app.example.com")));
        assert!(list.allows(Some("https://a.b.example.org")));
        assert!(!list.allows(Some("https://example.org")));
        assert!(!list.allows(Some("https://evil-example.org")));
        assert!(!list.allows(Some("null")));
        assert!(list.allows(None), "non-browser clients send no Origin");
        assert!(OriginList::new(&[]).allows(Some("https://anything")));
    }
}
