//! The parts of a resolv.conf that decide search-list walks: `ndots` and
//! the search list, read as glibc reads them (resolv/res_init.c): the last
//! `search` or `domain` line wins, `options ndots:N` is capped at 15 and
//! defaults to 1, `#` and `;` start comments. What it does not understand
//! it skips, as glibc does.

/// glibc's RES_MAXNDOTS.
const MAX_NDOTS: u32 = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// Names with fewer dots than this are tried with the search domains
    /// first.
    pub ndots: u32,
    /// The search domains, lowercase, without trailing dots.
    pub search: Vec<String>,
}

impl Default for ResolvConf {
    fn default() -> Self {
        Self {
            ndots: 1,
            search: Vec::new(),
        }
    }
}

impl ResolvConf {
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let mut words = line
                .split(|c: char| c.is_ascii_whitespace())
                .filter(|w| !w.is_empty());
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword {
                "search" | "domain" => {
                    conf.search = words
                        .take_while(|w| !w.starts_with(['#', ';']))
                        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
                        .filter(|w| !w.is_empty())
                        .collect();
                    if keyword == "domain" {
                        conf.search.truncate(1);
                    }
                }
                "options" => {
                    for w in words {
                        if let Some(n) = w.strip_prefix("ndots:") {
                            if let Ok(n) = n.parse::<u32>() {
                                conf.ndots = n.min(MAX_NDOTS);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// Whether `name` (without a trailing dot) is one of the search
    /// domains appended to a shorter name.
    pub fn expanded(&self, name: &str) -> bool {
        self.search.iter().any(|d| {
            name.len() > d.len() + 1
                && name.ends_with(d.as_str())
                && name.as_bytes()[name.len() - d.len() - 1] == b'.'
        })
    }
}

/// The dots in a name as a resolver counts them (a trailing dot makes it
/// absolute: never searched).
pub fn dots(name: &str) -> u32 {
    name.bytes().filter(|b| *b == b'.').count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_kubelet_writes() {
        let c = ResolvConf::parse(
            "search prod.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n",
        );
        assert_eq!(c.ndots, 5);
        assert_eq!(
            c.search,
            [
                "prod.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local"
            ]
        );
        assert!(c.expanded("redis.svc.cluster.local"));
        assert!(!c.expanded("cluster.local"), "the domain itself");
        assert!(!c.expanded("xcluster.local"));
        assert_eq!(dots("api.example.com"), 2);
    }

    #[test]
    fn the_last_line_wins_comments_and_junk_are_skipped() {
        let c = ResolvConf::parse(
            "# generated\nsearch a.example\ndomain Corp.Example.\noptions rotate ndots:30 timeout:2\n; options ndots:2\noptions ndots:x\nbogus line\n",
        );
        assert_eq!(c.search, ["corp.example"]);
        assert_eq!(c.ndots, 15, "capped like glibc");
        let c = ResolvConf::parse("nameserver 10.0.0.1\n");
        assert_eq!(c, ResolvConf::default());
        let c = ResolvConf::parse("search a.test b.test # c.test\n");
        assert_eq!(c.search, ["a.test", "b.test"]);
    }
}
