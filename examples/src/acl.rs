//! An IPv4 access list: rules matched in order, the first match decides, no match allows.
//!
//! Rule syntax (one per `--acl`): `ACTION [src CIDR] [dst CIDR] [proto udp|tcp|icmp|N]
//! [sport N] [dport N]`, ACTION being `deny` or `allow`, e.g. `deny proto udp dport 53` or
//! `deny src 10.66.0.0/16`.

use std::net::Ipv4Addr;

/// The fields of an IPv4 packet a rule can look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// UDP/TCP ports (0 for other protocols or a non-first fragment).
    pub sport: u16,
    pub dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Prefix {
    addr: u32,
    mask: u32,
}

impl Prefix {
    fn parse(s: &str) -> Result<Prefix, String> {
        let (a, len) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("'{a}' is not an IPv4 address"))?;
        let len: u32 = match len.parse() {
            Ok(n) if n <= 32 => n,
            _ => return Err(format!("'/{len}' is not a prefix length (0..=32)")),
        };
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Ok(Prefix {
            addr: u32::from(addr) & mask,
            mask,
        })
    }

    fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask == self.addr
    }
}

/// One rule: the fields it names must all match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    src: Option<Prefix>,
    dst: Option<Prefix>,
    proto: Option<u8>,
    sport: Option<u16>,
    dport: Option<u16>,
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, String> {
        let mut w = text.split_whitespace();
        let allow = match w.next() {
            Some("allow") => true,
            Some("deny") => false,
            other => {
                return Err(format!(
                    "rule '{text}': starts with {other:?}, not allow/deny"
                ))
            }
        };
        let mut r = Rule {
            allow,
            src: None,
            dst: None,
            proto: None,
            sport: None,
            dport: None,
        };
        while let Some(key) = w.next() {
            let val = w
                .next()
                .ok_or_else(|| format!("rule '{text}': '{key}' needs a value"))?;
            let port = || {
                val.parse::<u16>()
                    .map_err(|_| format!("rule '{text}': '{val}' is not a port"))
            };
            match key {
                "src" => r.src = Some(Prefix::parse(val)?),
                "dst" => r.dst = Some(Prefix::parse(val)?),
                "proto" => {
                    r.proto = Some(match val {
                        "icmp" => 1,
                        "tcp" => 6,
                        "udp" => 17,
                        n => n
                            .parse()
                            .map_err(|_| format!("rule '{text}': unknown protocol '{n}'"))?,
                    })
                }
                "sport" => r.sport = Some(port()?),
                "dport" => r.dport = Some(port()?),
                k => return Err(format!("rule '{text}': unknown field '{k}'")),
            }
        }
        Ok(r)
    }

    fn matches(&self, f: &Flow) -> bool {
        self.src.is_none_or(|p| p.contains(f.src))
            && self.dst.is_none_or(|p| p.contains(f.dst))
            && self.proto.is_none_or(|p| p == f.proto)
            && self.sport.is_none_or(|p| p == f.sport)
            && self.dport.is_none_or(|p| p == f.dport)
    }
}

/// Whether `rules` let `flow` through (first match decides; no match allows).
pub fn allowed(rules: &[Rule], flow: &Flow) -> bool {
    rules
        .iter()
        .find(|r| r.matches(flow))
        .is_none_or(|r| r.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: [u8; 4], dst: [u8; 4], proto: u8, dport: u16) -> Flow {
        Flow {
            src: src.into(),
            dst: dst.into(),
            proto,
            sport: 1000,
            dport,
        }
    }

    #[test]
    fn first_match_decides_and_no_match_allows() {
        let rules: Vec<Rule> = [
            "allow src 10.66.1.0/24",
            "deny src 10.66.0.0/16",
            "deny proto udp dport 53",
        ]
        .iter()
        .map(|r| Rule::parse(r).unwrap())
        .collect();
        assert!(allowed(&rules, &flow([10, 66, 1, 9], [1, 1, 1, 1], 17, 53)));
        assert!(!allowed(&rules, &flow([10, 66, 2, 9], [1, 1, 1, 1], 6, 80)));
        assert!(!allowed(
            &rules,
            &flow([192, 0, 2, 1], [1, 1, 1, 1], 17, 53)
        ));
        assert!(allowed(&rules, &flow([192, 0, 2, 1], [1, 1, 1, 1], 6, 53)));
        assert!(allowed(&[], &flow([0; 4], [0; 4], 0, 0)));
    }

    #[test]
    fn bad_rules_name_what_is_wrong() {
        for (text, want) in [
            ("permit src 1.2.3.4", "not allow/deny"),
            ("deny src 1.2.3", "not an IPv4 address"),
            ("deny dst 1.2.3.4/33", "prefix length"),
            ("deny proto sctpx", "unknown protocol"),
            ("deny dport 70000", "not a port"),
            ("deny ttl 3", "unknown field"),
            ("deny src", "needs a value"),
        ] {
            let e = Rule::parse(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
