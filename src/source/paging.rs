//! Which links a live pull may follow. Dataverse pages carry `@odata.nextLink` and, on the last
//! page of a change-tracking query, `@odata.deltaLink`; the client follows the first at once and
//! stores the second for the next pull. Both are text from the server, so both are checked
//! before anything is sent to them or stored: same scheme, host and port as the configured org,
//! a path under `/api/data/`, not a link this query already followed, and not past the page
//! limit. No HTTP here: the checks are unit-tested on their own.

use std::collections::HashSet;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::net::Target;

/// The longest piece of a link quoted in a message: paging cookies make links kilobytes long.
const SHOWN: usize = 160;

/// Why a link was not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkRefused {
    /// Another scheme, host or port than the org's, or a path outside the Web API.
    Foreign {
        what: &'static str,
        link: String,
        org: String,
    },
    /// A link this query already followed: the server would page forever.
    Loop { what: &'static str, link: String },
    /// The query reached `dynamics.max_pages_per_query`.
    TooManyPages { max: u32 },
}

impl fmt::Display for LinkRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRefused::Foreign { what, link, org } => write!(
                f,
                "{what} {} is not a Web API link of {org}; refusing to follow or store it (nothing sent)",
                shorten(link)
            ),
            LinkRefused::Loop { what, link } => write!(
                f,
                "{what} {} was already followed in this query; the server is paging in a loop",
                shorten(link)
            ),
            LinkRefused::TooManyPages { max } => write!(
                f,
                "the query passed {max} pages (dynamics.max_pages_per_query); stopping rather than paging forever"
            ),
        }
    }
}

impl std::error::Error for LinkRefused {}

/// The links one query has followed, and the org they must stay on.
#[derive(Debug)]
pub(crate) struct Paging {
    org: Target,
    org_url: String,
    /// Hashes of the links followed: a query of 100k pages keeps 800 KB, not the links.
    followed: HashSet<u64>,
    pages: u32,
    max_pages: u32,
}

impl Paging {
    /// `org_url` was checked by `net::check_url`, so it parses.
    pub(crate) fn new(org_url: &str, max_pages: u32) -> Option<Paging> {
        Some(Paging {
            org: Target::parse(org_url)?,
            org_url: org_url.to_string(),
            followed: HashSet::new(),
            pages: 0,
            max_pages,
        })
    }

    /// Checks a link without following it (a delta link, stored for the next pull).
    pub(crate) fn check(&self, what: &'static str, link: &str) -> Result<(), LinkRefused> {
        let foreign = || LinkRefused::Foreign {
            what,
            link: link.to_string(),
            org: self.org_url.clone(),
        };
        let target = Target::parse(link).ok_or_else(foreign)?;
        let under_api = target.path.starts_with("/api/data/")
            && !target.path.split('/').any(|part| part == "..");
        if !self.org.same_origin(&target) || !under_api {
            return Err(foreign());
        }
        Ok(())
    }

    /// Counts a request to `link`: checked as above, never one already requested in this
    /// query, and within the page limit.
    pub(crate) fn follow(&mut self, what: &'static str, link: &str) -> Result<(), LinkRefused> {
        self.check(what, link)?;
        if self.pages >= self.max_pages {
            return Err(LinkRefused::TooManyPages {
                max: self.max_pages,
            });
        }
        let mut hasher = DefaultHasher::new();
        link.hash(&mut hasher);
        if !self.followed.insert(hasher.finish()) {
            return Err(LinkRefused::Loop {
                what,
                link: link.to_string(),
            });
        }
        self.pages += 1;
        Ok(())
    }
}

fn shorten(link: &str) -> String {
    if link.chars().count() <= SHOWN {
        return link.to_string();
    }
    let head: String = link.chars().take(SHOWN).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORG: &str = "https://contoso.crm.dynamics.com";
    const API: &str = "https://contoso.crm.dynamics.com/api/data/v9.2";

    fn paging(max: u32) -> Paging {
        Paging::new(ORG, max).unwrap()
    }

    #[test]
    fn links_of_the_org_under_the_web_api_are_followed() {
        let mut paging = paging(10);
        for link in [
            format!("{API}/opportunities?$skiptoken=1"),
            format!("{API}/opportunities?$skiptoken=2"),
            "https://CONTOSO.crm.dynamics.com:443/api/data/v9.2/accounts?$deltatoken=9".to_string(),
        ] {
            paging.follow("@odata.nextLink", &link).unwrap();
        }
    }

    #[test]
    fn another_host_scheme_port_or_path_is_refused() {
        let paging = paging(10);
        for link in [
            "https://evil.invalid/api/data/v9.2/opportunities",
            "http://contoso.crm.dynamics.com/api/data/v9.2/opportunities",
            "https://contoso.crm.dynamics.com:8443/api/data/v9.2/opportunities",
            "https://contoso.crm.dynamics.com.invalid/api/data/v9.2/opportunities",
            "https://x@contoso.crm.dynamics.com/api/data/v9.2/opportunities",
            "https://contoso.crm.dynamics.com/identity/steal",
            "https://contoso.crm.dynamics.com/api/data/../../oops",
            "/api/data/v9.2/opportunities",
            "not a link",
        ] {
            let err = paging.check("@odata.deltaLink", link).unwrap_err();
            assert!(
                matches!(err, LinkRefused::Foreign { .. }),
                "{link}: {err:?}"
            );
            assert!(err.to_string().contains("@odata.deltaLink"), "{err}");
        }
    }

    #[test]
    fn a_link_followed_twice_is_a_loop() {
        let mut paging = paging(10);
        let a = format!("{API}/opportunities?$skiptoken=a");
        let b = format!("{API}/opportunities?$skiptoken=b");
        paging.follow("@odata.nextLink", &a).unwrap();
        paging.follow("@odata.nextLink", &b).unwrap();
        let err = paging.follow("@odata.nextLink", &a).unwrap_err();
        assert!(matches!(err, LinkRefused::Loop { .. }), "{err:?}");
        assert!(err.to_string().contains("already followed"), "{err}");
    }

    #[test]
    fn the_page_limit_stops_a_query() {
        let mut paging = paging(3);
        for n in 0..3 {
            paging
                .follow("@odata.nextLink", &format!("{API}/x?p={n}"))
                .unwrap();
        }
        let err = paging
            .follow("@odata.nextLink", &format!("{API}/x?p=3"))
            .unwrap_err();
        assert_eq!(err, LinkRefused::TooManyPages { max: 3 });
        assert!(err.to_string().contains("max_pages_per_query"));
    }

    #[test]
    fn long_links_are_shortened_in_messages() {
        let link = format!("https://evil.invalid/{}", "c".repeat(5000));
        let err = paging(1).check("@odata.nextLink", &link).unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
    }
}
