//! The policy file's rules: parsing, validation, and matching against an
//! event (two-valued) or against a connection the kernel is about to make
//! (three-valued: a term the kernel cannot see may or may not match).

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::{Facts, JUDGED_ACTIONS, Pattern};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Alert,
    Deny,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Alert => "alert",
            Self::Deny => "deny",
        }
    }
}

fn default_action() -> Action {
    Action::Allow
}

fn default_interval() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PolicyFile {
    #[serde(default = "default_action")]
    pub default: Action,
    #[serde(default = "default_interval")]
    pub violation_interval_secs: u64,
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

/// One `[[rules]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleFile {
    pub id: String,
    pub action: Action,
    #[serde(default)]
    pub enforce: bool,
    #[serde(default)]
    pub description: Option<String>,
    // Who.
    pub namespace: Option<OneOrMany<String>>,
    pub service_account: Option<OneOrMany<String>>,
    pub pod: Option<OneOrMany<String>>,
    pub container_name: Option<OneOrMany<String>>,
    pub container_image: Option<OneOrMany<String>>,
    pub spiffe_id: Option<OneOrMany<String>>,
    pub executable: Option<OneOrMany<String>>,
    pub user: Option<OneOrMany<String>>,
    pub login_uid: Option<OneOrMany<u32>>,
    pub agent: Option<bool>,
    // Where and what.
    pub provider: Option<OneOrMany<String>>,
    pub model: Option<OneOrMany<String>>,
    pub host: Option<OneOrMany<String>>,
    pub port: Option<OneOrMany<u16>>,
    pub operation: Option<OneOrMany<String>>,
    pub mcp_server: Option<OneOrMany<String>>,
    pub tool: Option<OneOrMany<String>>,
    pub events: Option<OneOrMany<String>>,
}

/// What a text term reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKey {
    Namespace,
    ServiceAccount,
    Pod,
    ContainerName,
    ContainerImage,
    SpiffeId,
    Executable,
    User,
    Provider,
    Model,
    Operation,
    McpServer,
    Tool,
}

/// Where a term's value comes from, which decides what the kernel can
/// judge at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The same for every process of a cgroup (container, pod, workload).
    Cgroup,
    /// Differs between processes of one cgroup.
    Process,
    /// Known at connect: destination address, name, port.
    Connection,
    /// Only inside the connection (model, operation, tool).
    Request,
}

impl TextKey {
    pub fn name(self) -> &'static str {
        match self {
            Self::Namespace => "namespace",
            Self::ServiceAccount => "service_account",
            Self::Pod => "pod",
            Self::ContainerName => "container_name",
            Self::ContainerImage => "container_image",
            Self::SpiffeId => "spiffe_id",
            Self::Executable => "executable",
            Self::User => "user",
            Self::Provider => "provider",
            Self::Model => "model",
            Self::Operation => "operation",
            Self::McpServer => "mcp_server",
            Self::Tool => "tool",
        }
    }

    fn paths(self) -> &'static [&'static str] {
        match self {
            Self::Namespace => &["k8s.namespace.name"],
            Self::ServiceAccount => &["k8s.service_account.name"],
            Self::Pod => &["k8s.pod.name"],
            Self::ContainerName => &["container.name", "k8s.container.name"],
            Self::ContainerImage => &["container.image.name"],
            Self::SpiffeId => &["workload.spiffe_id"],
            Self::Executable => &["process.executable.path", "process.executable.name"],
            Self::User => &["process.user.name", "process.user.id"],
            Self::Provider => &["gen_ai.provider.name"],
            Self::Model => &["gen_ai.request.model"],
            Self::Operation => &["gen_ai.operation.name"],
            Self::McpServer => &["mcp.server.name"],
            Self::Tool => &["gen_ai.tool.name"],
        }
    }

    fn level(self) -> Level {
        match self {
            Self::Namespace
            | Self::ServiceAccount
            | Self::Pod
            | Self::ContainerName
            | Self::ContainerImage
            | Self::SpiffeId => Level::Cgroup,
            Self::Executable | Self::User => Level::Process,
            Self::Provider => Level::Connection,
            Self::Model | Self::Operation | Self::McpServer | Self::Tool => Level::Request,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Term {
    Text {
        key: TextKey,
        patterns: Vec<Pattern>,
    },
    LoginUid(Vec<u32>),
    Agent(bool),
    /// Names (globs, without case) or IP addresses.
    Host(Vec<HostPattern>),
    Port(Vec<u16>),
    Events(Vec<String>),
}

#[derive(Debug, Clone)]
pub enum HostPattern {
    Name(Pattern),
    Ip(IpAddr),
}

impl Term {
    pub fn level(&self) -> Level {
        match self {
            Self::Text { key, .. } => key.level(),
            Self::LoginUid(_) | Self::Agent(_) => Level::Process,
            Self::Host(_) | Self::Port(_) | Self::Events(_) => Level::Connection,
        }
    }

    /// The value that matched, as `key=value`, or `None`.
    fn matches(&self, facts: &dyn Facts) -> Option<String> {
        match self {
            Self::Text { key, patterns } => {
                let values = text_values(*key, facts);
                let hit = values
                    .iter()
                    .find(|v| patterns.iter().any(|p| text_matches(*key, p, v)))?;
                Some(format!("{}={hit}", key.name()))
            }
            Self::LoginUid(uids) => {
                let uid = facts.fact("process.loginuid")?.as_u64()?;
                uids.iter()
                    .any(|u| u64::from(*u) == uid)
                    .then(|| format!("login_uid={uid}"))
            }
            Self::Agent(want) => {
                let is = facts.fact("agent.session.id").is_some();
                (is == *want).then(|| format!("agent={is}"))
            }
            Self::Host(patterns) => {
                let dest = Destination::of(facts);
                host_hit(patterns, &dest).map(|h| format!("host={h}"))
            }
            Self::Port(ports) => {
                let port = facts.fact("server.port")?.as_u64()?;
                ports
                    .iter()
                    .any(|p| u64::from(*p) == port)
                    .then(|| format!("port={port}"))
            }
            Self::Events(actions) => {
                let action = facts.fact("event.action")?.as_str()?;
                actions
                    .iter()
                    .any(|a| a == action)
                    .then(|| format!("event={action}"))
            }
        }
    }

    /// At connect time: `identity` is the cgroup's (None when not judged
    /// yet).
    fn matches_connection(&self, identity: Option<&dyn Facts>, conn: &Connection) -> Tri {
        match self {
            Self::Text { key, patterns } => match key.level() {
                Level::Cgroup => match identity {
                    Some(facts) => {
                        let values = text_values(*key, facts);
                        if values.is_empty() && unresolved(facts, key.paths()) {
                            // Not read yet (a token not yet mounted, a
                            // runtime that did not answer): it may match.
                            Tri::Maybe
                        } else {
                            Tri::from(
                                values
                                    .iter()
                                    .any(|v| patterns.iter().any(|p| text_matches(*key, p, v))),
                            )
                        }
                    }
                    None => Tri::Maybe,
                },
                Level::Connection => Tri::from(conn.names.iter().any(|n| {
                    crate::provider::known_provider(n)
                        .is_some_and(|prov| patterns.iter().any(|p| p.matches(prov)))
                })),
                Level::Process | Level::Request => Tri::Maybe,
            },
            Self::LoginUid(_) | Self::Agent(_) => Tri::Maybe,
            Self::Host(patterns) => {
                let dest = Destination {
                    names: conn.names.clone(),
                    ip: Some(conn.ip),
                };
                Tri::from(host_hit(patterns, &dest).is_some())
            }
            Self::Port(ports) => Tri::from(conn.port.is_some_and(|p| ports.contains(&p))),
            Self::Events(actions) => Tri::from(actions.iter().any(|a| a == "connect")),
        }
    }
}

/// Whether the identity says it could not read one of `paths`.
fn unresolved(facts: &dyn Facts, paths: &[&str]) -> bool {
    facts
        .fact("identity.unresolved")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .any(|p| p.as_str().is_some_and(|p| paths.contains(&p)))
        })
}

/// A connection as the kernel sees it, with the names the sensor knows for
/// its address. `port` None stands for any port no rule names.
#[derive(Debug, Clone)]
pub struct Connection {
    pub ip: IpAddr,
    pub names: Vec<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    Yes,
    No,
    Maybe,
}

impl From<bool> for Tri {
    fn from(b: bool) -> Self {
        if b { Self::Yes } else { Self::No }
    }
}

/// The destination of an event: the names it went by and its address.
struct Destination {
    names: Vec<String>,
    ip: Option<IpAddr>,
}

impl Destination {
    fn of(facts: &dyn Facts) -> Self {
        let mut names: Vec<String> = Vec::new();
        for path in [
            "tls.server_name",
            "server.domain",
            "url.domain",
            "server.address",
        ] {
            if let Some(name) = facts.fact(path).and_then(Value::as_str)
                && name.parse::<IpAddr>().is_err()
            {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let ip = facts
            .fact("server.ip")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<IpAddr>().ok());
        Self { names, ip }
    }
}

fn host_hit(patterns: &[HostPattern], dest: &Destination) -> Option<String> {
    for p in patterns {
        match p {
            HostPattern::Ip(ip) => {
                if dest.ip.is_some_and(|d| same_ip(d, *ip)) {
                    return Some(ip.to_string());
                }
            }
            HostPattern::Name(pattern) => {
                if let Some(n) = dest.names.iter().find(|n| pattern.matches(n)) {
                    return Some(n.clone());
                }
            }
        }
    }
    None
}

/// Equal addresses, an IPv4 address and its IPv4-mapped IPv6 form too.
pub fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// The values of a text term on an event. The provider comes from the
/// event, else from a known provider host the event went to.
fn text_values(key: TextKey, facts: &dyn Facts) -> Vec<String> {
    let mut out = Vec::new();
    for path in key.paths() {
        match facts.fact(path) {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Number(n)) => out.push(n.to_string()),
            _ => {}
        }
    }
    if key == TextKey::Provider && out.is_empty() {
        let dest = Destination::of(facts);
        out.extend(
            dest.names
                .iter()
                .filter_map(|n| crate::provider::known_provider(n))
                .map(str::to_owned),
        );
    }
    out
}

fn text_matches(key: TextKey, pattern: &Pattern, value: &str) -> bool {
    match key {
        // A pattern with a `/` is a path; without, a file name (matched
        // against both, as the name is the path's last part).
        TextKey::Executable if !pattern.as_str().contains('/') => {
            pattern.matches(value.rsplit('/').next().unwrap_or(value))
        }
        _ => pattern.matches(value),
    }
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub action: Action,
    pub enforce: bool,
    pub description: Option<String>,
    pub terms: Vec<Term>,
}

impl Rule {
    pub(super) fn from_file(raw: RuleFile) -> Result<Self, String> {
        let id = raw.id;
        if id.is_empty()
            || id.len() > 128
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            return Err("`id` must be 1 to 128 letters, digits, `.`, `_`, `:` or `-`".into());
        }
        let mut terms = Vec::new();
        let texts = [
            (TextKey::Namespace, raw.namespace),
            (TextKey::ServiceAccount, raw.service_account),
            (TextKey::Pod, raw.pod),
            (TextKey::ContainerName, raw.container_name),
            (TextKey::ContainerImage, raw.container_image),
            (TextKey::SpiffeId, raw.spiffe_id),
            (TextKey::Executable, raw.executable),
            (TextKey::User, raw.user),
            (TextKey::Provider, raw.provider),
            (TextKey::Model, raw.model),
            (TextKey::Operation, raw.operation),
            (TextKey::McpServer, raw.mcp_server),
            (TextKey::Tool, raw.tool),
        ];
        for (key, values) in texts {
            let Some(values) = values else { continue };
            let values = non_empty(key.name(), values.into_vec())?;
            let patterns = values
                .iter()
                .map(|v| Pattern::new(v, false).map_err(|e| format!("`{}`: {e}", key.name())))
                .collect::<Result<Vec<_>, _>>()?;
            terms.push(Term::Text { key, patterns });
        }
        if let Some(uids) = raw.login_uid {
            terms.push(Term::LoginUid(non_empty("login_uid", uids.into_vec())?));
        }
        if let Some(agent) = raw.agent {
            terms.push(Term::Agent(agent));
        }
        if let Some(hosts) = raw.host {
            let hosts = non_empty("host", hosts.into_vec())?;
            let mut patterns = Vec::new();
            for h in hosts {
                let h = h.trim_end_matches('.');
                let bare = h.trim_start_matches('[').trim_end_matches(']');
                if let Ok(ip) = bare.parse::<IpAddr>() {
                    patterns.push(HostPattern::Ip(ip));
                } else if h.contains(':') || h.contains('/') {
                    return Err(format!(
                        "`host` {h:?}: a host name or an IP address (no port: use `port`; no CIDR)"
                    ));
                } else {
                    let p = Pattern::new(h, true).map_err(|e| format!("`host`: {e}"))?;
                    patterns.push(HostPattern::Name(p));
                }
            }
            terms.push(Term::Host(patterns));
        }
        if let Some(ports) = raw.port {
            let ports = non_empty("port", ports.into_vec())?;
            if ports.contains(&0) {
                return Err("`port` 0 is not a port".into());
            }
            terms.push(Term::Port(ports));
        }
        let mut events_has_connect = true;
        if let Some(events) = raw.events {
            let events = non_empty("events", events.into_vec())?;
            if let Some(bad) = events
                .iter()
                .find(|e| !JUDGED_ACTIONS.contains(&e.as_str()))
            {
                return Err(format!(
                    "`events`: `{bad}` is not judged by policies (only {})",
                    JUDGED_ACTIONS.join(", ")
                ));
            }
            events_has_connect = events.iter().any(|e| e == "connect");
            terms.push(Term::Events(events));
        }
        if terms.is_empty() {
            return Err(
                "no match terms: a rule that matches everything is the policy's `default`".into(),
            );
        }
        let rule = Self {
            id,
            action: raw.action,
            enforce: raw.enforce,
            description: raw.description,
            terms,
        };
        if rule.enforce {
            if rule.action != Action::Deny {
                return Err("`enforce` applies to `deny` rules only".into());
            }
            if let Some(t) = rule.terms.iter().find(|t| t.level() == Level::Process) {
                return Err(format!(
                    "`enforce` needs identity terms the kernel can key on (namespace, \
                     service_account, pod, container_name, container_image, spiffe_id): `{}` \
                     differs between processes of one container",
                    term_name(t)
                ));
            }
            let has_destination = rule.terms.iter().any(|t| {
                matches!(
                    t,
                    Term::Host(_)
                        | Term::Text {
                            key: TextKey::Provider,
                            ..
                        }
                )
            });
            if !has_destination {
                return Err(
                    "`enforce` needs a destination the kernel can see: `host` or `provider`".into(),
                );
            }
            if !events_has_connect {
                return Err(
                    "`enforce` refuses connections: `events`, when given, must include `connect`"
                        .into(),
                );
            }
        }
        Ok(rule)
    }

    /// Whether a `deny` of this rule is carried out in the kernel: enforced
    /// and judged on what a connect shows.
    pub fn kernel_enforced(&self) -> bool {
        self.enforce && !self.has_request_terms()
    }

    pub fn has_request_terms(&self) -> bool {
        self.terms.iter().any(|t| t.level() == Level::Request)
    }

    /// On an event: `Some(what matched)` when every term matches.
    pub fn matches(&self, facts: &dyn Facts) -> Option<Vec<String>> {
        self.terms.iter().map(|t| t.matches(facts)).collect()
    }

    pub fn matches_connection(&self, identity: Option<&dyn Facts>, conn: &Connection) -> Tri {
        let mut out = Tri::Yes;
        for t in &self.terms {
            match t.matches_connection(identity, conn) {
                Tri::No => return Tri::No,
                Tri::Maybe => out = Tri::Maybe,
                Tri::Yes => {}
            }
        }
        out
    }

    /// Exact host names (no glob) and addresses this rule names, and the
    /// provider patterns: where the sensor looks for addresses to guard.
    pub fn destinations(&self) -> (Vec<String>, Vec<IpAddr>, Vec<Pattern>, Vec<Pattern>) {
        let (mut names, mut ips, mut globs, mut providers) = (vec![], vec![], vec![], vec![]);
        for t in &self.terms {
            match t {
                Term::Host(hosts) => {
                    for h in hosts {
                        match h {
                            HostPattern::Ip(ip) => ips.push(*ip),
                            HostPattern::Name(p) if p.is_literal() => {
                                names.push(p.as_str().to_owned())
                            }
                            HostPattern::Name(p) => globs.push(p.clone()),
                        }
                    }
                }
                Term::Text {
                    key: TextKey::Provider,
                    patterns,
                } => providers.extend(patterns.iter().cloned()),
                _ => {}
            }
        }
        (names, ips, globs, providers)
    }

    /// The ports this rule names.
    pub fn ports(&self) -> Vec<u16> {
        self.terms
            .iter()
            .filter_map(|t| match t {
                Term::Port(p) => Some(p.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

fn term_name(t: &Term) -> &'static str {
    match t {
        Term::Text { key, .. } => key.name(),
        Term::LoginUid(_) => "login_uid",
        Term::Agent(_) => "agent",
        Term::Host(_) => "host",
        Term::Port(_) => "port",
        Term::Events(_) => "events",
    }
}

fn non_empty<T>(key: &str, v: Vec<T>) -> Result<Vec<T>, String> {
    if v.is_empty() {
        Err(format!(
            "`{key}` is an empty list (leave it out to match anything)"
        ))
    } else {
        Ok(v)
    }
}
